"""Pieces every `herald` sub-command module shares: exit codes, the config options, loading the config."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.core.config import Config, load_config

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
