"""Pieces every `herald` sub-command module shares: exit codes, the config options, loading the config, and finding
the engine that runs on a data folder (for the commands that talk to it: send, reload, tui)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

from engine.core import datafolder
from engine.core.config import Config, load_config
from engine.core.errors import HeraldError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="config file (default: ./herald.toml if it exists, else built-in defaults)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="data folder (default: .herald)")


def load_for(args: argparse.Namespace, *, rules: Path | None = None) -> Config:
    config = load_config(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "data", None):
        updates["data_dir"] = args.data.resolve()
    if rules is not None:
        updates["rules_dir"] = rules.resolve()
        if config.scripts_dir == config.rules_dir / "scripts":
            updates["scripts_dir"] = rules.resolve() / "scripts"
    return config.model_copy(update=updates)


def client_host(host: str) -> str:
    """Where a client on this machine reaches an engine listening on `host` (a wildcard means every address)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class EngineAddress(NamedTuple):
    url: str
    source: str  # where the address came from, for error messages


def engine_url(config: Config, url: str | None) -> EngineAddress:
    """`--url`, else the address the engine running on the data folder published, else the config's port."""
    if url:
        return EngineAddress(url.rstrip("/"), "--url")
    published = datafolder.published_address(config.data_dir)
    if published:
        return EngineAddress(published.rstrip("/"), str(config.data_dir / datafolder.ADDRESS_FILE))
    return EngineAddress(f"http://{client_host(config.http.host)}:{config.http.port}", "the config")


def unreachable(address: EngineAddress, exc: BaseException) -> HeraldError:
    hint = "is `herald run` running?"
    if address.source.endswith(datafolder.ADDRESS_FILE):
        hint = f"the address is from {address.source}: did the engine stop without removing it?"
    return HeraldError(f"cannot reach Herald at {address.url} ({exc}); {hint}")


def read_token(config: Config) -> str:
    path = config.data_dir / "api-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise HeraldError(f"no API token at {path}: is `herald run` running with this data folder?") from None


def add_client_args(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """--config, --data and --url for the commands that talk to a running engine. `suppress`: on a nested parser,
    leave the value alone unless given there (argparse would otherwise reset what the outer parser read)."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument("--config", type=Path, metavar="FILE", **default,  # type: ignore[arg-type]
                        help="config file (default: ./herald.toml if it exists, else built-in defaults)")
    parser.add_argument("--data", type=Path, metavar="DIR", **default,  # type: ignore[arg-type]
                        help="data folder (default: .herald); its engine.address says where its engine listens")
    parser.add_argument("--url", metavar="URL", **default,  # type: ignore[arg-type]
                        help="engine address, such as http://127.0.0.1:8470 (default: the address the engine "
                             "running on the data folder published, else the config's port)")
