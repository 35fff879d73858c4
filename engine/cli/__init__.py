"""The `herald` command line (the composition root)."""

from engine.cli.main import main

__all__ = ["main"]
