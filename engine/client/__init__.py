"""What observers (the TUI) use: the client API and snapshot records."""
