"""The canonical text of each construct: what the formatter prints and what fingerprints hash.

One spelling per construct: keywords in a fixed order (alert filters: status, severity, from, labels; run
options: sandboxed, timeout, retry, backoff, memory, network, args), single spaces, durations in canonical units
(`90m` -> `1h30m`), `firing` left out (it is the default), `sandboxed` always written (run is always sandboxed),
`retry N times` with its `times`, and parentheses around every `and`/`or` nested in another or under `not` (the
grammar requires them when they mix).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dsl.ast import (
    AlertTrigger,
    AllOf,
    AnyOf,
    ButtonRef,
    ButtonTrigger,
    CheckDisk,
    CommandTrigger,
    Compare,
    Condition,
    Dedupe,
    Emit,
    Escalate,
    EventTrigger,
    Group,
    IsSet,
    Matches,
    MemberOf,
    MessageTrigger,
    MissingTrigger,
    Not,
    Notify,
    Param,
    RateLimit,
    Reply,
    RequireConfirmation,
    RequireRole,
    Rule,
    RunScript,
    ScheduleTrigger,
    Silence,
    SilenceWhere,
    TaskTrigger,
    TeamDecl,
    Trigger,
    Value,
    When,
)
from dsl.values import format_duration, quote, slash

_d = format_duration


def print_team(team: TeamDecl) -> str:
    members = ", ".join(
        f"@{m.address}" if m.platform is None else f"{m.platform} {quote(m.address)}" for m in team.members
    )
    return f"team {team.name} = {members}"


def print_trigger(trigger: Trigger) -> str:
    return _TRIGGERS[type(trigger)](trigger)


def _alert(t: AlertTrigger) -> str:
    words = ["on alert"]
    if t.status != "firing":
        words.append(t.status)
    if t.severity is not None:
        words.append(f"severity {t.severity}" if t.severity_op == "=" else f"severity {t.severity_op} {t.severity}")
    if t.service is not None:
        words.append(f"from {t.service}")
    for label in t.labels:
        value = slash(label.value) if label.op in ("=~", "!~") else _text(label.value)
        words.append(f"label {label.name} {label.op} {value}")
    return " ".join(words)


def print_param(p: Param) -> str:
    kind = "|".join(p.choices) if p.type == "choice" else p.type
    if not p.optional:
        return f"<{p.name}: {kind}>"
    default = f" = {print_value(p.default)}" if p.default is not None else ""
    return f"[<{p.name}: {kind}{default}>]"


def _command(t: CommandTrigger) -> str:
    return " ".join(["on command", t.name, *(print_param(p) for p in t.params)])


def _schedule(t: ScheduleTrigger) -> str:
    if t.how == "every":
        spec = f"every {_d(t.every_s or 0)}"
    elif t.how == "daily":
        spec = f"every day at {t.at}"
    else:
        spec = f"cron {quote(t.cron or '')}"
    zone = f" in {t.zone}" if t.zone else ""
    return f"on schedule {spec}{zone}"


_TRIGGERS: dict[type, Callable[..., str]] = {
    AlertTrigger: _alert,
    CommandTrigger: _command,
    ButtonTrigger: lambda t: f"on button {t.name}",
    TaskTrigger: lambda t: f"on task {t.script}" + (f" {t.status}" if t.status else ""),
    ScheduleTrigger: _schedule,
    EventTrigger: lambda t: f"on event {t.name}",
    MessageTrigger: lambda t: f"on message matching {slash(t.pattern)}",
    MissingTrigger: lambda t: f"on alert missing {t.name} for {_d(t.for_s)}",
}


def print_value(value: Value) -> str:
    if value.kind == "text":
        return quote(value.text)
    if value.kind == "person":
        return f"@{value.text}"
    return value.text


def _text(text: str) -> str:
    """A label value: bare when it is one plain word, else quoted."""
    return text if re.fullmatch(r"-?[A-Za-z0-9_][A-Za-z0-9_.:\-]*", text) else quote(text)


def print_condition(cond: Condition, *, nested: bool = False) -> str:
    if isinstance(cond, AllOf | AnyOf):
        word = " and " if isinstance(cond, AllOf) else " or "
        text = word.join(print_condition(o, nested=True) for o in cond.operands)
        return f"({text})" if nested else text
    if isinstance(cond, Not):
        return f"not {print_condition(cond.operand, nested=True)}"
    if isinstance(cond, Compare):
        return f"{cond.field} {cond.op} {print_value(cond.value)}"
    if isinstance(cond, MemberOf):
        return f"{cond.field} in [{', '.join(print_value(v) for v in cond.values)}]"
    if isinstance(cond, Matches):
        return f"{cond.field} matches {slash(cond.pattern)}"
    assert isinstance(cond, IsSet)
    return f"{cond.field} is set"


def print_clause(clause: object) -> str:
    if isinstance(clause, When):
        return f"when {print_condition(clause.condition)}"
    if isinstance(clause, RequireRole):
        return f"require role {clause.role}"
    if isinstance(clause, RequireConfirmation):
        by = f" by another {clause.role}" if clause.role else ""
        return f"require confirmation{by} within {_d(clause.within_s)}"
    if isinstance(clause, Dedupe):
        return f"dedupe by {clause.field} for {_d(clause.for_s)}"
    if isinstance(clause, Group):
        return f"group by {clause.field} within {_d(clause.within_s)}"
    if isinstance(clause, RateLimit):
        per = f" per {clause.key}" if clause.key else ""
        return f"at most {clause.count} per {_d(clause.per_s)}{per}"
    assert isinstance(clause, CheckDisk)
    return f"check disk {quote(clause.path)} has {clause.size_text} free"


def _button(button: ButtonRef) -> str:
    return f"{button.name} {button.arg}" if button.arg else button.name


def print_action(action: object) -> str:
    if isinstance(action, Notify):
        words = [f"notify {action.team}"]
        if action.template is not None:
            words.append(f"saying {quote(action.template)}")
        if action.buttons:
            words.append(" ".join(["with buttons", ", ".join(_button(b) for b in action.button_list)]).rstrip())
        return " ".join(words)
    if isinstance(action, Reply):
        return f"reply {quote(action.template)}"
    if isinstance(action, RunScript):
        words = [f"run {action.script} sandboxed"]
        if action.timeout_s is not None:
            words.append(f"timeout {_d(action.timeout_s)}")
        if action.retries:
            words.append(f"retry {action.retries} times")
        if action.backoff_s is not None:
            words.append(f"backoff {_d(action.backoff_s)}")
        if action.memory_text is not None:
            words.append(f"memory {action.memory_text}")
        if action.network is not None:
            words.append(f"network {action.network}")
            if action.network_allow:
                words[-1] += " " + ", ".join(quote(a) for a in action.network_allow)
        if action.args:
            words.append("args " + " ".join(quote(a) for a in action.args))
        return " ".join(words)
    if isinstance(action, Emit):
        return f"emit {action.event}"
    if isinstance(action, Silence):
        duration = f"{{{action.for_field}}}" if action.for_field else _d(action.for_s or 0)
        return f"silence alert by {action.field} for {duration}"
    if isinstance(action, SilenceWhere):
        duration = f"{{{action.for_field}}}" if action.for_field else _d(action.for_s or 0)
        matchers = " and ".join(f"{m.label} = {quote(m.template) if m.quoted else m.template}"
                                for m in action.matchers)
        return f"silence alert where {matchers} for {duration}"
    assert isinstance(action, Escalate)
    return escalation_text([(step.target, step.after_s) for step in action.steps], action.repeat_s)


def escalation_text(steps: list[tuple[str, float]], repeat_s: float | None) -> str:
    """`escalate to T after D unless acknowledged` (one step, as it always read: its fingerprint, and so its
    pending timers, stay the same) or `escalate to A after D1, to B after D2, repeat every R until acknowledged`."""
    parts = [f"to {target} after {_d(after)}" for target, after in steps]
    if repeat_s is not None:
        parts.append(f"repeat every {_d(repeat_s)}")
    return f"escalate {', '.join(parts)} {'until' if repeat_s is not None else 'unless'} acknowledged"


def body_lines(rule: Rule) -> list[str]:
    """The trigger, each clause and each action, one per entry: clauses before actions, each in written order."""
    return [
        print_trigger(rule.trigger),
        *(print_clause(c) for c in rule.clauses),
        *(print_action(a) for a in rule.actions),
    ]


def print_rule(rule: Rule, indent: str = "  ") -> list[str]:
    """A one-liner stays one line; a named rule is a block with one construct per line."""
    lines = body_lines(rule)
    if rule.name is None:
        return [" ".join(lines)]
    return [f"rule {rule.name}:", *(indent + line for line in lines)]
