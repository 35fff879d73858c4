"""What goes out to people: messages, outlets, live task output."""
