"""The durable task queue and its Redis variant."""
