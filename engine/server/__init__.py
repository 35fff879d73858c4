"""The Engine: lifecycle, HTTP API, metrics."""
