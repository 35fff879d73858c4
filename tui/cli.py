"""`herald tui`: registered by the TUI itself (entry-point group `herald.commands`), so the engine never imports it.

The CLI is the composition root: it finds command groups through the entry points and lets each add its parsers.
"""

from __future__ import annotations

import argparse

from engine.cli.common import add_client_args, engine_url, load_for, read_token
from engine.client.remote import RemoteEngineClient, TokenMissing, read_api_token


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tui = sub.add_parser("tui", help="open the terminal UI on a running engine")
    add_client_args(tui)
    tui.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tui.app import make_app  # Textual loads only when the TUI is asked for

    config = load_for(args)
    last = read_token(config)  # fails now, with the fix, if there is no running engine's token at all

    def token() -> str:
        """The token file as it is now: the engine renews it, and a restarted engine writes a new one."""
        nonlocal last
        try:
            last = read_api_token(config.data_dir)
        except TokenMissing:
            pass  # the engine is stopping or restarting: keep trying with the last one
        return last

    make_app(RemoteEngineClient(engine_url(config, args.url).url, token)).run()
    return 0
