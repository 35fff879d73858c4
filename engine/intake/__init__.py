"""What comes in from people: command text."""
