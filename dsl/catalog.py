"""What the rules may name and use, as the engine and its integrations provide it.

The engine builds a `Catalog` from its config, its integrations and the scripts folder and hands it to
`compile_sources`; the compiler itself never looks anything up, which keeps it pure and every check easy to test.

Besides names (teams, roles, scripts, severities), the catalog says which *constructs* can run: the trigger
kinds with their fields, the action kinds and the stage clauses. A rule using one the catalog leaves out is a
compile error ("no integration provides ..."), so a construct the engine cannot run yet fails loudly instead of
silently never firing. The defaults are everything the language knows, so `Catalog(teams=, roles=, scripts=)`
accepts every construct; `restricted_to` narrows it.

Field types: text, number, duration, severity, user, map (any key below it, e.g. `alert.labels.env`), list,
and any (an open kind: `event.*` carries whatever the emitting side put in it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

DEFAULT_SEVERITIES = ("info", "warning", "error", "critical")

FIELD_TYPES = ("text", "number", "duration", "severity", "user", "map", "list", "any")

# Fields every event has, whatever its kind.
COMMON_FIELDS: Mapping[str, str] = MappingProxyType(
    {"actor.platform": "text", "actor.account": "text", "actor.principal": "user"}
)


def _kind(fields: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(fields)


# Every trigger kind the language knows and the fields its events carry (without the `kind.` prefix's `*`:
# a field named "*" means the kind is open). Command arguments add `command.<name>` per command.
TRIGGER_FIELDS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "alert": _kind(
            {
                "alert.status": "text",
                "alert.severity": "severity",
                "alert.service": "text",
                "alert.name": "text",
                "alert.summary": "text",
                "alert.fingerprint": "text",
                "alert.labels": "map",
                "alert.annotations": "map",
                "alert.url": "text",
                "alert.starts_at": "text",
                "alert.ends_at": "text",
            }
        ),
        "command": _kind(
            {"command.name": "text", "command.text": "text", "command.args": "list", "command.user": "user"}
        ),
        "button": _kind(
            {
                "button.action": "text",
                "button.arg": "text",
                "button.rule": "text",
                "button.button_id": "text",
                "button.source_event": "text",
                "button.alert_fingerprint": "text",
            }
        ),
        "task": _kind(
            {
                "task.task_id": "text",
                "task.script": "text",
                "task.status": "text",
                "task.exit_code": "number",
                "task.duration": "duration",
                "task.stdout_tail": "text",
                "task.stderr_tail": "text",
                "task.rule": "text",
            }
        ),
        "schedule": _kind({"schedule.rule": "text", "schedule.time": "text"}),
        # `on alert missing NAME for D`: state is "missing" (not heard from for D) or "back" (heard from again)
        "heartbeat": _kind({"heartbeat.rule": "text", "heartbeat.name": "text", "heartbeat.state": "text",
                            "heartbeat.last_seen": "text", "heartbeat.silent_for": "duration",
                            "heartbeat.summary": "text"}),
        "event": _kind({"event.name": "text", "event.*": "any"}),
        "message": _kind({"message.text": "text", "message.user": "user", "message.chat": "text"}),
    }
)

ACTION_KINDS = ("notify", "reply", "run", "emit", "silence", "escalate")
STAGE_KINDS = ("require role", "require confirmation", "dedupe", "group", "rate limit", "check disk")
DEFAULT_PLATFORMS = frozenset({"chat", "telegram", "slack", "discord", "matrix", "irc", "email"})
# Buttons the engine handles itself (it knows what ack, unack and mute do without a rule).
DEFAULT_BUTTONS = frozenset({"ack", "unack", "mute"})


@dataclass(frozen=True, slots=True)
class Catalog:
    """The names rules may use and the constructs that can run; `severities` goes from least to most severe."""

    teams: frozenset[str]
    roles: frozenset[str]
    scripts: frozenset[str]
    severities: tuple[str, ...] = DEFAULT_SEVERITIES
    triggers: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: TRIGGER_FIELDS)
    actions: frozenset[str] = frozenset(ACTION_KINDS)
    stages: frozenset[str] = frozenset(STAGE_KINDS)
    platforms: frozenset[str] = DEFAULT_PLATFORMS
    buttons: frozenset[str] = DEFAULT_BUTTONS
    events: frozenset[str] = frozenset()  # event names raised from outside (not by `emit`)
    # Per platform, a pure check of a chat address written in a team (`slack "C012AB3CD"`): None, or the problem.
    address_checks: Mapping[str, Callable[[str], str | None]] = field(default_factory=dict)
    # Teams the engine offers by default: rules may name them, and a rule file may declare its own of the same name
    # (which then replaces the default) instead of clashing with it like a configured team.
    default_teams: frozenset[str] = frozenset()
    # The people `@name` may name; None: the compiler is not told (any `@name` is accepted).
    people: frozenset[str] | None = None
    # Commands the engine answers itself (/help, /cancel...): a rule on one would never run.
    builtin_commands: frozenset[str] = frozenset()
    # The smallest memory limit a sandboxed run can start with (the engine's sandbox knows the real floor).
    min_memory_bytes: int = 4 * 1024 * 1024

    def restricted_to(
        self,
        *,
        triggers: Iterable[str] | None = None,
        actions: Iterable[str] | None = None,
        stages: Iterable[str] | None = None,
    ) -> Catalog:
        """The same catalog with only the given trigger kinds, actions and stages (None keeps what there is)."""
        changes: dict[str, Any] = {}
        if triggers is not None:
            changes["triggers"] = MappingProxyType({k: self.triggers[k] for k in triggers})
        if actions is not None:
            changes["actions"] = frozenset(actions)
        if stages is not None:
            changes["stages"] = frozenset(stages)
        return replace(self, **changes)

    def fields_of(self, kind: str) -> Mapping[str, str]:
        """Every field an event of `kind` may carry, with its type (common fields included)."""
        return {**self.triggers.get(kind, {}), **COMMON_FIELDS}
