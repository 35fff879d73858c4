"""Herald's terminal console; it talks to an engine only through `engine.client.EngineClient`."""

from __future__ import annotations

from tui.app import HeraldApp, make_app

__all__ = ["HeraldApp", "make_app"]
