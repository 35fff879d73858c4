"""`herald test`: build the event the engine would build, and say what the engine would do with it; run nothing.

The event goes through the engine's own paths: an alert is the Alertmanager payload `herald send alert` posts,
translated by the webhook integration, or a body saved from any alert source (`herald test grafana body.json`) read
by that source's own reader, its severity put on the configured scale as at intake; a command is parsed like chat
text; fields, argument binding and the permission check are `Event.fields` and `engine.runs.decide`, which the
runtime calls too. What the dry run cannot
know without the engine's state (dedupe, rate limits, confirmations, disk space) it names as the clauses that decide.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from dsl import CompiledRule, EventGraph
from dsl.describe import describe
from dsl.plan import RequireRoleStage
from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.events import (
    Actor,
    AlertData,
    ButtonData,
    CommandData,
    EmittedData,
    Event,
    EventData,
    HeartbeatData,
    MessageData,
    ScheduleData,
    TaskData,
    utcnow,
)
from engine.core.severity import RAW_LABEL, normalise
from engine.intake.commands import CommandTextError, parse_command
from engine.runs import decide
from engine.runs.builtins import BUILTIN_BUTTONS, BUILTIN_COMMANDS

KINDS: dict[str, type[BaseModel]] = {model.model_fields["kind"].default: model for model in
                          (AlertData, CommandData, ButtonData, TaskData, EmittedData, MessageData, ScheduleData,
                           HeartbeatData)}
_DATA = TypeAdapter(EventData)
_ACTED = ("command", "button", "message")  # the kinds people send; the rest come from systems
DRY_RUN = "dry-run"  # what stands in for ids the engine would make (button ids, task ids)


class EventError(ValueError):
    """The event given to `herald test` is not one the engine could receive; the message says why."""


# ---- building the event ---------------------------------------------------------------------------------------


def events_from_args(words: Sequence[str], config: Config) -> list[Event]:
    """The events named by `herald test`'s arguments: `SOURCE BODY.json` (every alert of a body that source posts,
    e.g. `grafana` or `generic/uptime`), else the one event of `event_from_args`; alerts with their severity on the
    configured scale, as the engine puts it when they arrive."""
    if len(words) == 2 and words[1].endswith(".json"):
        readers = source_readers(config)
        if words[0] in readers:
            events = _read_body(Path(words[1]), words[0], readers[words[0]])
        else:
            raise EventError(f"no installed alert source is called {words[0]!r} (sources: "
                             f"{', '.join(sorted(readers)) or 'none'})")
    else:
        events = [event_from_args(words, config)]
    return [_on_scale(event, config) for event in events]


def source_readers(config: Config) -> Mapping[str, Callable[[Any], list[Event]]]:
    """Every alert source the installed integrations this config turns on read, by name."""
    from engine.plugin.discovery import active_integrations, discover, validate_integrations

    installed = discover()
    try:
        settings = validate_integrations(config, installed)
    except ConfigError as exc:
        raise EventError(str(exc)) from None
    readers: dict[str, Callable[[Any], list[Event]]] = {}
    for integration in active_integrations(config, installed):
        offer = integration.manifest.sources
        if offer is not None:
            readers.update(offer(settings.get(integration.manifest.name)))
    return readers


def _read_body(path: Path, source: str, read: Callable[[Any], list[Event]]) -> list[Event]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"{path}: {exc}") from None
    try:
        return read(body)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise EventError(f"{path}: the {source} hook would refuse this body (422): {exc}") from None


def _on_scale(event: Event, config: Config) -> Event:
    if not isinstance(event.data, AlertData):
        return event
    return event.model_copy(update={"data": normalise(event.data, config.alerts).data})


def event_from_args(words: Sequence[str], config: Config) -> Event:
    """The event named by `herald test`'s arguments: a JSON file or inline words."""
    if len(words) == 1 and (words[0].endswith(".json") or Path(words[0]).is_file()):
        return _event_from_json(Path(words[0]), config)
    if len(words) == 1:
        words = shlex.split(words[0])
    if not words:
        raise EventError("name an event")
    kind, rest = words[0], list(words[1:])
    _check_kind(kind)
    principal = config.api_principal if kind in _ACTED else None
    if len(rest) >= 2 and rest[-2] == "as":
        if kind not in _ACTED:
            raise EventError(f"a {kind} event has no sender: `as NAME` goes with {', '.join(_ACTED)}")
        principal, rest = rest[-1].removeprefix("@"), rest[:-2]
    if kind == "command":
        if len(rest) != 1:
            raise EventError('a command is its text in quotes, such as "/backup now", then optionally as NAME')
        return _event(_command(rest[0]), principal)
    values: dict[str, Any] = {}
    if kind in ("button", "event") and rest and "=" not in rest[0]:
        values["action" if kind == "button" else "name"] = rest.pop(0)
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise EventError(f"expected KEY=VALUE, found {word!r}")
        values[key] = value
    if kind == "alert":
        return _event(_alert_from_labels(values), principal)
    return _event(_data(kind, values), principal)


def _event_from_json(path: Path, config: Config) -> Event:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data", {}), dict) or "kind" not in raw:
        raise EventError(f'{path}: expected {{"kind": KIND, "data": {{...}}}}')
    unknown = set(raw) - {"kind", "data", "as"}
    if unknown:
        raise EventError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; an event file holds kind, data, as")
    kind, values = str(raw["kind"]), dict(raw.get("data", {}))
    _check_kind(kind)
    if kind == "command" and "name" not in values and isinstance(values.get("text"), str):
        data: Any = _command(values["text"])
    else:
        data = _data(kind, values)
    return _event(data, raw.get("as", config.api_principal if kind in _ACTED else None))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise EventError(f"unknown event kind {kind!r}; the engine receives {', '.join(KINDS)}")


def _command(text: str) -> CommandData:
    try:
        command = parse_command(text)
    except CommandTextError as exc:
        raise EventError(f"the engine refuses this command text: {exc}") from None
    if command is None:
        raise EventError(f"{text!r} is not a command: commands start with '/'")
    return command


def _alert_from_labels(values: dict[str, str]) -> AlertData:
    """The alert `herald send alert` would post, as the Alertmanager webhook turns it into an event."""
    from engine.cli.client import alert_payload
    from engine.plugin.discovery import discover

    # The live path for alerts: the installed integration that reads Alertmanager's payload, found like any plugin.
    decoders = [i.manifest.decode for i in discover() if i.manifest.decode and "trigger:alert" in i.manifest.provides]
    if not decoders:
        raise EventError("no installed integration reads alerts (is the webhook integration installed?)")

    status = values.pop("status", "firing")
    if status not in ("firing", "resolved"):
        raise EventError(f"status must be firing or resolved, not {status!r}")
    summary = values.pop("summary", "Test alert sent by herald test")
    payload = alert_payload(values, summary=summary, resolved=status == "resolved")
    data = decoders[0](payload)[0].data
    assert isinstance(data, AlertData)
    return data


def _data(kind: str, values: dict[str, Any]) -> Any:
    """The event's typed data, with stand-ins for what only the engine makes (ids, times)."""
    defaults: dict[str, Any] = {
        "alert": {"status": "firing"},
        "button": {"button_id": DRY_RUN, "rule": DRY_RUN, "source_event": DRY_RUN},
        "task": {"task_id": DRY_RUN, "rule": DRY_RUN},
        "schedule": {"time": utcnow().isoformat(timespec="seconds")},
        "heartbeat": {"state": "missing"},
    }.get(kind, {})
    if kind == "alert" and "fingerprint" not in values:
        labels = values.get("labels") or {}
        defaults["fingerprint"] = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
    if kind == "event":
        name = values.pop("name", None)
        values = {"name": name, "values": {k: _typed(v) for k, v in values.items()}}
    try:
        return _DATA.validate_python({**defaults, **values, "kind": kind})
    except ValidationError as exc:
        raise EventError(f"not a {kind} event: {_problems(exc, kind)}") from None


def _problems(exc: ValidationError, kind: str) -> str:
    fields = ", ".join(name for name in KINDS[kind].model_fields if name != "kind")
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"][1:]) or kind
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].lower()
        parts.append(f"{where}: {message}")
    return "; ".join(parts) + f" (a {kind} has {fields})"


def _typed(value: Any) -> Any:
    """Words typed on the command line as the numbers they look like (emitted values keep their types)."""
    if not isinstance(value, str):
        return value
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def _event(data: Any, principal: str | None) -> Event:
    actor = Actor(platform="cli", account=DRY_RUN, principal=principal) if principal else None
    return Event(source=DRY_RUN, actor=actor, data=data)


# ---- what the engine would do ---------------------------------------------------------------------------------


def explain(event: Event, graph: EventGraph, config: Config) -> list[str]:
    """Lines saying what the engine would do with `event`: per rule of its kind, run / deny / reject / no match."""
    principal = event.actor.principal if event.actor else None
    sender = f" (as {principal})" if principal else ""
    lines = [f"event: {event.kind} {_show_fields(event.fields())}".rstrip() + sender]
    if principal is not None and principal not in config.principals:
        known = ", ".join(sorted(config.principals)) or "nobody yet"
        lines.append(f"  refused: unknown principal {principal!r} (the config knows {known}); no rule would run")
        return lines
    data = event.data
    if isinstance(data, CommandData) and data.name in BUILTIN_COMMANDS:
        lines.append(f"  built in: Herald answers /{data.name} itself ({BUILTIN_COMMANDS[data.name]}); "
                     "no rule runs")
        return lines
    if isinstance(data, ButtonData) and data.action in BUILTIN_BUTTONS:
        lines.append(f"  built in: Herald handles the {data.action} button itself, then the rules below")
    fields = event.fields()
    if isinstance(data, CommandData):
        fields.update(decide.command_fields(event, data, graph))
    roles = {name: frozenset(p.roles) for name, p in config.principals.items()}
    matched = graph.match(event.kind, fields)
    for rule in graph.of_kind(event.kind):
        if rule in matched:
            lines.append(_verdict(event, rule, lambda who: roles.get(who or "", frozenset())))
        else:
            lines.append(f"  no match    {_name(rule)}: {rule.explain(fields) or '?'} does not hold")
    if isinstance(data, AlertData) and RAW_LABEL in data.labels:
        lines.insert(1, _severity_note(data, config))
    if not graph.of_kind(event.kind):
        lines.append(f"  no rule is on {event.kind}")
    elif isinstance(data, CommandData) and not matched:
        lines.append(f"  the engine would answer: Unknown command /{data.name}.")
    if isinstance(data, AlertData) and not matched and data.status == "firing":
        team = config.alerts.unmatched
        lines.append(f"  unmatched: the engine would notify {team} ([alerts] unmatched)" if team else
                     "  unmatched: the engine would log a warning (no [alerts] unmatched team to tell)")
    return lines


def _severity_note(data: AlertData, config: Config) -> str:
    raw = data.labels[RAW_LABEL]
    if raw.strip().lower() in config.alerts.severity_aliases:
        return f"  severity {raw!r} arrives as {data.severity} ([alerts] severity_aliases)"
    if raw.strip().lower() in config.alerts.severities:
        return f"  severity {raw!r} arrives as {data.severity}"
    return (f"  severity {raw!r} is not on the scale ({', '.join(config.alerts.severities)}): the engine would warn "
            f"and treat it as {data.severity}")


def _verdict(event: Event, rule: CompiledRule, roles_of: decide.RolesOf) -> str:
    refusal = decide.refusal(event, rule, roles_of)
    if refusal is not None:
        return f"  would deny  {_name(rule)}: {refusal}"
    problem, _ = decide.invalid_params(event, rule)
    if problem is not None:
        return f"  would reject {_name(rule)}: {problem}"
    stages = [describe(s) for s in rule.stages if not isinstance(s, RequireRoleStage)]  # decided just above
    actions = ", ".join(describe(a) for a in rule.actions)
    if stages:
        return f"  would run   {_name(rule)}: {actions} (if these let it: {', '.join(stages)})"
    return f"  would run   {_name(rule)}: {actions}"


def _name(rule: CompiledRule) -> str:
    """An unnamed rule's name is its location: say it once."""
    return rule.location if rule.name == rule.location else f"{rule.name} ({rule.location})"


def _show_fields(fields: dict[str, object]) -> str:
    """The fields rules can test, minus the sender (said apart), stand-ins and times (they vary from run to run)."""
    flat: dict[str, object] = {}
    for key, value in fields.items():
        if key.startswith("actor.") or key.endswith(("_at", "_id", ".time")) or value == DRY_RUN:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value not in ((), "", None):
            flat[key] = value
    return " ".join(f"{key}={_show(value)}" for key, value in sorted(flat.items()))


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or " " in value) else value
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    return json.dumps(value, default=str)
