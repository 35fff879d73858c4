"""`herald tui`: registered by the TUI itself (entry-point group `herald.commands`), so the engine never imports it.

The CLI is the composition root: it finds command groups through the entry points and lets each add its parsers.
"""

from __future__ import annotations

import argparse

from engine.cli.common import add_config_args, load_for
from engine.client.remote import RemoteEngineClient, engine_url, read_token


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tui = sub.add_parser("tui", help="open the terminal UI on a running engine")
    add_config_args(tui)
    tui.add_argument("--url", help="engine address (default: from the config, http://127.0.0.1:8470)")
    tui.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tui.app import make_app  # Textual loads only when the TUI is asked for

    config = load_for(args)
    make_app(RemoteEngineClient(engine_url(config, args.url), read_token(config))).run()
    return 0
