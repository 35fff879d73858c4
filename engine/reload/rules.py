"""Reading rule files from disk and compiling them against what this installation provides."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from dsl import Catalog, CompileResult, compile_sources
from engine.core.config import Config
from engine.core.errors import RulesError
from engine.delivery.connector import AddressError
from engine.plugin.api import ConnectorSpec, Integration
from engine.plugin.discovery import active_integrations, connector_specs, discover
from engine.runs.builtins import BUILTIN_COMMANDS
from engine.sandbox.policy import MIN_MEMORY

RULE_SUFFIX = ".rules"

# What the runtime can run today; a rule using anything else is a compile error naming it, not a silent no-op.
ENGINE_TRIGGERS = ("alert", "command", "button", "task", "event", "message", "schedule", "heartbeat")
ENGINE_ACTIONS = ("notify", "reply", "run", "emit", "silence", "escalate")
ENGINE_STAGES = ("require role", "check disk", "require confirmation", "dedupe", "group", "rate limit")


@functools.cache
def installed_integrations() -> tuple[Integration, ...]:
    """The installed integrations (found once per process)."""
    return tuple(discover())


def installed_connectors(config: Config) -> Mapping[str, ConnectorSpec]:
    """The chat platforms the installed integrations this config turns on connect to."""
    return MappingProxyType(connector_specs(active_integrations(config, installed_integrations())))


def catalog_for(config: Config, connectors: Mapping[str, ConnectorSpec] | None = None) -> Catalog:
    """What rules may name: the configured severity scale, configured teams (and the built-in ones, which a rule
    file may redeclare), roles and people, the scripts in the scripts folder (the whitelist), and the chat
    platforms a connector is installed for, with their address checks (default: the installed ones); and the
    sandbox limits, so a rule the engine could never run does not compile."""
    specs = installed_connectors(config) if connectors is None else connectors
    scripts_dir = config.scripts_dir
    scripts: frozenset[str] = frozenset()
    if scripts_dir is not None and scripts_dir.is_dir():
        scripts = frozenset(p.name for p in scripts_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    catalog = Catalog(teams=frozenset(config.teams), roles=frozenset(config.roles), scripts=scripts,
                      severities=tuple(config.alerts.severities), platforms=frozenset(specs),
                      address_checks={name: functools.partial(_address_problem, spec) for name, spec in specs.items()},
                      default_teams=frozenset(config.default_teams()), people=frozenset(config.principals),
                      min_memory_bytes=MIN_MEMORY, builtin_commands=frozenset(BUILTIN_COMMANDS))
    return catalog.restricted_to(triggers=ENGINE_TRIGGERS, actions=ENGINE_ACTIONS, stages=ENGINE_STAGES)


def _address_problem(spec: ConnectorSpec, address: str) -> str | None:
    try:
        spec.parse_address(address)
    except AddressError as exc:
        return str(exc)
    return None


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """Every `*.rules` file named or found (recursively) under the given folders, in a stable order. A named file
    that is not a rule file is refused (RulesError) rather than compiled: `herald check README.md` is a slip."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{RULE_SUFFIX}") if p.is_file()))
        elif path.suffix != RULE_SUFFIX:
            raise RulesError(f"{display_path(path)}: not a rule file (rule files end in {RULE_SUFFIX})", [])
        else:
            found.append(path)
    return found


def display_path(path: Path) -> str:
    """Paths in diagnostics and rule names read relative to the working directory when they are below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def compile_paths(paths: Sequence[Path], config: Config,
                  connectors: Mapping[str, ConnectorSpec] | None = None) -> CompileResult:
    """Compile every rule file under `paths`; raises RulesError for a path that does not exist or cannot be read."""
    sources = []
    for path in rule_files(paths):
        try:
            sources.append((display_path(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{display_path(path)}: cannot read rule file: {exc}", []) from None
    return compile_sources(sources, catalog_for(config, connectors))
