"""The durable substrate: store, journal, bus, events, ids, errors, config, timers."""
