"""Discovery of integrations through the `herald.integrations` entry-point group, and validation of their config.

Built-in integrations are found exactly like third-party ones, so a plugin author sees what we use. An integration
that fails to import is disabled with a clear message; the others still load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points

from pydantic import BaseModel, ValidationError

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.delivery.connector import AddressError
from engine.plugin.api import ConnectorSpec, Integration

log = logging.getLogger("herald.plugins")

ENTRY_POINT_GROUP = "herald.integrations"


def discover() -> list[Integration]:
    """Load every integration registered under the entry-point group, in name order."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            integration = ep.load()
        except Exception as exc:  # one broken plugin must not take the others down
            log.error("integration %s is disabled: it failed to load (%s: %s)", ep.name, type(exc).__name__, exc)
            continue
        found.append(integration)
    if not found:
        log.warning("no integrations found in entry-point group %s: is Herald installed (pip install -e .)?",
                    ENTRY_POINT_GROUP)
    return found


def active_integrations(config: Config, integrations: Sequence[Integration]) -> list[Integration]:
    """The integrations this config turns on: all but those that need a config section it does not have."""
    return [i for i in integrations if not i.manifest.needs_config or i.manifest.name in config.integrations]


def connector_specs(integrations: Sequence[Integration]) -> dict[str, ConnectorSpec]:
    """The chat platforms these integrations connect to, by platform name."""
    return {i.manifest.connector.platform: i.manifest.connector for i in integrations if i.manifest.connector}


def validate_integrations(config: Config, integrations: Sequence[Integration]) -> dict[str, BaseModel]:
    """Each integration's `[integrations.<name>]` section through its config model, and every account and target
    address through its platform's parser; ConfigError naming every problem (`integrations.telegram.token: field
    required`, `teams.ops.targets: ...`)."""
    problems: list[str] = []
    models: dict[str, BaseModel] = {}
    known = {i.manifest.name for i in integrations}
    for name in config.integrations:
        if name not in known:
            problems.append(f"integrations.{name}: no such integration is installed (installed: "
                            f"{', '.join(sorted(known)) or 'none'})")
    active = active_integrations(config, integrations)
    for integration in active:
        manifest = integration.manifest
        if manifest.config_model is None:
            continue
        try:
            models[manifest.name] = manifest.config_model.model_validate(config.integrations.get(manifest.name, {}))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
                problems.append(f"integrations.{manifest.name}{'.' + where if where else ''}: {message}")
    specs = connector_specs(active)
    dormant = {spec.platform: name for name, spec in
               ((i.manifest.name, i.manifest.connector) for i in integrations if i not in active) if spec}
    for owner, addresses in _addresses(config):
        for address in addresses:
            platform = address.partition(":")[0]
            if platform in dormant:
                problems.append(f"{owner}: {address!r}: the {platform} connector is installed but not configured "
                                f"(add an [integrations.{dormant[platform]}] section)")
                continue
            problem = address_problem(address, specs)
            if problem:
                problems.append(f"{owner}: {problem}")
    if problems:
        raise ConfigError("; ".join(problems))
    return models


def address_problem(address: str, specs: dict[str, ConnectorSpec]) -> str | None:
    platform, _, rest = address.partition(":")
    if platform not in specs:
        return (f"{address!r}: no connector for platform {platform!r} is installed "
                f"(platforms: {', '.join(sorted(specs)) or 'none'})")
    try:
        specs[platform].parse_address(rest)
    except AddressError as exc:
        return f"{address!r}: {exc}"
    return None


def _addresses(config: Config) -> list[tuple[str, list[str]]]:
    found = [(f"principals.{name}.accounts", list(p.accounts)) for name, p in config.principals.items()]
    found += [(f"teams.{name}.targets", list(t.targets)) for name, t in config.teams.items()]
    return found
