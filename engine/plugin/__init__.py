"""The integration plugin API and discovery."""
