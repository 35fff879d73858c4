"""`herald tui`: registered by the TUI itself (entry-point group `herald.commands`), so the engine never imports it.

The CLI is the composition root: it finds command groups through the entry points and lets each add its parsers.

Whose token: a person's own API token (`herald token issue NAME`) given with `--token-file`, `HERALD_TOKEN` or
`--token` makes the TUI act as that person, through the same role checks as chat, and the audit names them;
without one the TUI uses the local token of the engine running on the data folder (it acts as `api_principal`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import add_client_args, engine_url, load_for
from engine.client.remote import RemoteEngineClient, TokenMissing, read_api_token

if TYPE_CHECKING:
    from tui.app import HeraldApp

TOKEN_ENV = "HERALD_TOKEN"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tui = sub.add_parser("tui", help="open the terminal UI on a running engine (local or remote)",
                         description="Open the terminal UI. With a person's own API token (herald token issue "
                                     f"NAME) it acts as that person: --token-file FILE or {TOKEN_ENV}=... (neither "
                                     "shows in `ps`), or --token. Without one it uses the local token of the "
                                     "engine running on the data folder.")
    add_client_args(tui)
    whose = tui.add_mutually_exclusive_group()
    whose.add_argument("--token-file", type=Path, metavar="FILE",
                       help="a file holding your API token (read again at every reconnect)")
    whose.add_argument("--token", metavar="JWT",
                       help=f"your API token (visible to other users in `ps`: prefer --token-file or {TOKEN_ENV})")
    tui.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    build_app(args).run()
    return 0


def build_app(args: argparse.Namespace) -> HeraldApp:
    """The console for `herald tui ARGS`, connected (once it runs) to the engine and as the person they name."""
    from tui.app import make_app  # Textual loads only when the TUI is asked for

    config = load_for(args)
    url = engine_url(config, args.url).url
    return make_app(RemoteEngineClient(url, _token_source(args, config.data_dir)))


def _token_source(args: argparse.Namespace, data_dir: Path) -> str | Callable[[], str]:
    """The person's token (--token, --token-file, HERALD_TOKEN), else the engine's local token, re-read at every
    connect: the engine renews it, and a restarted engine writes a new one."""
    if args.token:
        return str(args.token)
    if args.token_file:
        return _file_token(args.token_file)
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    last = read_api_token(data_dir)  # fails now, with the fix, if there is no running engine's token at all

    def local() -> str:
        nonlocal last
        try:
            last = read_api_token(data_dir)
        except TokenMissing:
            pass  # the engine is stopping or restarting: keep trying with the last one
        return last

    return local


def _file_token(path: Path) -> Callable[[], str]:
    def read() -> str:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenMissing(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        if not token:
            raise TokenMissing(f"the token file {path} is empty: put the output of `herald token issue NAME` in it")
        return token

    read()  # a wrong path is an error now, not a TUI that never connects
    return read
