"""Herald's terminal console; it talks to an engine only through `engine.client.EngineClient`.

Textual is loaded only when the app is asked for (`from tui import make_app`), not when `herald` registers its
`tui` command (tui/cli.py): every `herald run` reads that registration, and Textual costs it ~9 MiB it never uses.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HeraldApp", "make_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tui import app

        return getattr(app, name)
    raise AttributeError(f"module 'tui' has no attribute {name!r}")
