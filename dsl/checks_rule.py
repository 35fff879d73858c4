"""Checks of one rule on its own: is every construct provided, every name known, every value of the right type?

`RuleContext` carries what a rule may refer to beyond the catalog (teams declared in rule files, the argument
spec of each command) so these checks stay per rule; `dsl.checks` does what needs all rules at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from dsl.ast import (
    AlertTrigger,
    AllOf,
    AnyOf,
    CheckDisk,
    CommandTrigger,
    Compare,
    Condition,
    Dedupe,
    Emit,
    Escalate,
    EscalationStep,
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
    SilenceMatcher,
    SilenceWhere,
    Span,
    TaskTrigger,
    When,
)
from dsl.catalog import Catalog
from dsl.checks_values import check_regex, check_template, check_value, unknown_field
from dsl.cron import CronError, parse_cron
from dsl.diagnostics import Diagnostic, did_you_mean
from dsl.fields import field_type
from dsl.kinds import action_kind, clause_kind, trigger_kind
from dsl.values import format_duration, is_duration, is_int

_MAX_LISTED = 6
_KINDS = {
    "team": ("known teams", "no teams are configured"),
    "role": ("known roles", "no roles are configured"),
    "script": ("scripts in the scripts folder", "the scripts folder has no scripts"),
    "severity": ("severities", "no severities are configured"),
    "person": ("known people", "no people (principals) are configured"),
}
PARAM_TYPES = ("word", "text", "int", "duration", "user", "option")
PARAM_FIELD_TYPES = {"word": "text", "text": "text", "int": "number", "duration": "duration", "user": "user",
                     "choice": "text", "option": "text"}  # fmt: skip
# Triggers whose events come from a person in a conversation: roles can be checked and a reply has somewhere to go.
CONVERSATIONAL = frozenset({"command", "button", "message"})
# Triggers whose events may carry the conversation of the event that caused them (an emit from a command, a task
# a command started): a reply goes there, or nowhere when the cause had no conversation (DESIGN §3's example
# `on event deploy-done reply ...`).
MAYBE_CONVERSATIONAL = frozenset({"event", "task"})
_FROM_A_PERSON = CONVERSATIONAL | MAYBE_CONVERSATIONAL
# `run ... retry N times backoff D`: the engine doubles the delay per attempt (and caps it at the longest backoff).
MIN_RETRIES, MAX_RETRIES = 1, 10
# An escalation's repeat: at most one page per minute per alert and rule, however the rule is written.
MIN_REPEAT_S = 60.0
MAX_ESCALATION_STEPS = 10
MIN_MISSING_S = 60.0  # `on alert missing NAME for D`
MIN_BACKOFF_S, MAX_BACKOFF_S = 1.0, 3600.0
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What rules may name besides the catalog: all teams (configured and declared) and each command's fields."""

    catalog: Catalog
    teams: frozenset[str]
    command_params: Mapping[str, tuple[Param, ...]]
    zones: frozenset[str] | None = None  # None: ask zoneinfo
    # The catalog's fields of each trigger kind, asked once per kind rather than once per rule.
    kind_fields: dict[str, Mapping[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def fields_of(self, kind: str) -> Mapping[str, str]:
        found = self.kind_fields.get(kind)
        if found is None:
            found = self.kind_fields[kind] = self.catalog.fields_of(kind)
        return found


def check_rule(rule: Rule, ctx: RuleContext) -> Iterator[Diagnostic]:
    """Every problem of meaning in `rule` on its own."""
    catalog = ctx.catalog
    kind = trigger_kind(rule.trigger)
    trigger = rule.trigger
    provided = kind in catalog.triggers
    if not provided:
        span = getattr(trigger, "kind_span", None) or trigger.span
        yield Diagnostic(
            span,
            f"no integration provides '{kind}' triggers",
            hint=_provides("trigger kinds", catalog.triggers),
        )
    known = ctx.fields_of(kind)
    params = ctx.command_params.get(trigger.name, trigger.params) if isinstance(trigger, CommandTrigger) else ()
    grouped = any(isinstance(clause, Group) for clause in rule.clauses)
    if params or grouped:
        known = dict(known)
        for param in params:
            known[f"command.{param.name}"] = PARAM_FIELD_TYPES.get(param.type, "text")
        if grouped:
            # The run of a released group carries the batch's size and the value it was grouped by.
            known.update({"group.count": "number", "group.key": "text"})
    yield from _check_trigger(rule, ctx)
    for clause in rule.clauses:
        yield from _check_clause(clause, kind, known, ctx)
    if not rule.actions:
        label = f"rule '{rule.name}'" if rule.name else "this rule"
        yield Diagnostic(rule.span, f"{label} has no action", hint="add one, such as 'notify <team>' or 'run <script>'")
    for action in rule.actions:
        yield from _check_action(action, kind, known, ctx)


# ---- triggers ---------------------------------------------------------------------------------------------


def _check_trigger(rule: Rule, ctx: RuleContext) -> Iterator[Diagnostic]:
    trigger, catalog = rule.trigger, ctx.catalog
    if isinstance(trigger, AlertTrigger):
        if trigger.severity is not None and trigger.severity not in catalog.severities:
            yield from known_name(
                "severity", trigger.severity, trigger.severity_span or trigger.span, catalog.severities, ordered=True
            )
        for label in trigger.labels:
            if label.op in ("=~", "!~"):
                diag = check_regex(label.value, label.value_span)
                if diag is not None:
                    yield diag
    elif isinstance(trigger, CommandTrigger):
        if trigger.name in catalog.builtin_commands:  # Herald answers these itself: the rule would never run
            yield Diagnostic(trigger.span, f"/{trigger.name} is one of Herald's own commands "
                                           f"({', '.join('/' + c for c in sorted(catalog.builtin_commands))}); "
                                           "a rule on it would never run: name the command differently")
        yield from _check_params(trigger.params)
    elif isinstance(trigger, TaskTrigger):
        yield from known_name("script", trigger.script, trigger.script_span or trigger.span, catalog.scripts)
    elif isinstance(trigger, ScheduleTrigger):
        yield from _check_schedule(trigger, ctx)
    elif isinstance(trigger, MissingTrigger) and trigger.for_s < MIN_MISSING_S:
        yield Diagnostic(trigger.for_span or trigger.span,
                         f"'for {format_duration(trigger.for_s)}' is too short to tell a heartbeat is missing: give "
                         f"{format_duration(MIN_MISSING_S)} or more",
                         hint="a heartbeat alert (Alertmanager's Watchdog) arrives every repeat_interval; wait for a "
                              "few of them")
    elif isinstance(trigger, MessageTrigger):
        diag = check_regex(trigger.pattern, trigger.pattern_span)
        if diag is not None:
            yield diag


def _check_params(params: tuple[Param, ...]) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    optional_seen = False
    for index, param in enumerate(params):
        span = param.span or Span("", 0, 0, 0, 0)
        if param.name in seen:
            yield Diagnostic(span, f"the argument '{param.name}' is declared twice")
        seen.add(param.name)
        if f"command.{param.name}" in _COMMAND_FIELDS:
            yield Diagnostic(
                span,
                f"an argument cannot be named '{param.name}': command.{param.name} is a field every command has",
                hint="choose another name",
            )
        if param.type != "choice" and param.type not in PARAM_TYPES:
            message = f"unknown argument type '{param.type}'"
            suggestion = did_you_mean(param.type, PARAM_TYPES)
            if suggestion is not None:
                message += f"; did you mean '{suggestion}'?"
            yield Diagnostic(
                param.type_span or span, message,
                hint="types: word, text, int, duration, user, option, or choices a|b|c",
            )
        if param.optional:
            optional_seen = True
        elif optional_seen:
            yield Diagnostic(span, f"the required argument '{param.name}' comes after an optional one",
                             hint="put optional arguments [<...>] last")
        if param.type == "text" and index != len(params) - 1:
            yield Diagnostic(span, f"'{param.name}' takes the rest of the line (type text), so it must come last")
        if param.default is not None:
            problem = default_problem(param)
            if problem is not None:
                yield Diagnostic(param.default.span or span, problem)


_COMMAND_FIELDS = frozenset({"command.name", "command.text", "command.args", "command.user"})


def default_problem(param: Param) -> str | None:
    """Why `param`'s default is not a value of its type, or None when it is."""
    assert param.default is not None
    text = param.default.text
    if param.type == "int" and not is_int(text):
        return f"the default of '{param.name}' must be a whole number, found '{text}'"
    if param.type == "duration" and not is_duration(text):
        return f"the default of '{param.name}' must be a duration such as 30s, 10m or 1h, found '{text}'"
    if param.type == "choice" and text not in param.choices:
        return f"the default of '{param.name}' must be one of {', '.join(param.choices)}, found '{text}'"
    return None


def _check_schedule(trigger: ScheduleTrigger, ctx: RuleContext) -> Iterator[Diagnostic]:
    span = trigger.spec_span or trigger.span
    if trigger.how == "every" and not trigger.every_s:
        yield Diagnostic(span, "a schedule of every zero seconds would never stop", hint="give a positive duration")
    if trigger.at is not None:
        match = _CLOCK.fullmatch(trigger.at)
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            yield Diagnostic(span, f"'{trigger.at}' is not a time of day", hint="write hours 00-23 and minutes 00-59")
    if trigger.cron is not None:
        try:
            parse_cron(trigger.cron)
        except CronError as exc:
            yield Diagnostic(
                span,
                f'cron "{trigger.cron}": {exc}',
                hint='five fields: minute hour day-of-month month day-of-week, such as "30 3 * * 1-5"',
            )
    if trigger.zone is not None and not _zone_exists(trigger.zone, ctx.zones):
        yield Diagnostic(
            trigger.zone_span or span,
            f"unknown time zone '{trigger.zone}'",
            hint="an IANA time zone such as UTC or Europe/Berlin",
        )


def _zone_exists(zone: str, zones: frozenset[str] | None) -> bool:
    if zones is not None:
        return zone in zones
    import zoneinfo  # stdlib data lookup; imported here so a compile without schedules never pays for it

    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# ---- clauses ----------------------------------------------------------------------------------------------


def _check_clause(clause: object, kind: str, known: Mapping[str, str], ctx: RuleContext) -> Iterator[Diagnostic]:
    catalog = ctx.catalog
    stage = clause_kind(clause)
    span: Span = clause.span  # type: ignore[attr-defined]
    if stage is not None and stage not in catalog.stages:
        yield Diagnostic(span, f"no integration provides '{stage}'", hint=_provides("clauses", catalog.stages))
    if isinstance(clause, When):
        yield from check_condition(clause.condition, kind, known, ctx)
    elif isinstance(clause, RequireRole):
        if clause.role not in catalog.roles:
            yield from known_name("role", clause.role, clause.role_span or clause.span, catalog.roles)
        if kind not in _FROM_A_PERSON:
            yield Diagnostic(span, f"{_an(kind)} comes from no person, so there are no roles to check",
                             hint="'require role' fits command, button and message rules")
    elif isinstance(clause, RequireConfirmation):
        if clause.role is not None:
            yield from known_name("role", clause.role, clause.role_span or clause.span, catalog.roles)
        if kind not in ("command", "button"):
            yield Diagnostic(span, f"{_an(kind)} has nobody to ask for a confirmation",
                             hint="'require confirmation' fits command and button rules")
        yield from _positive(clause.within_s, span, "confirmation window")
    elif isinstance(clause, Dedupe | Group):
        yield from _field_used(clause.field, clause.field_span or span, kind, known)
        yield from _positive(clause.for_s if isinstance(clause, Dedupe) else clause.within_s, span, "window")
    elif isinstance(clause, RateLimit):
        if clause.key is not None:
            yield from _field_used(clause.key, clause.key_span or span, kind, known)
        if clause.count < 1:
            yield Diagnostic(span, "'at most 0' would never let the rule run", hint="remove the rule instead")
        yield from _positive(clause.per_s, span, "rate window")
    elif isinstance(clause, CheckDisk) and not clause.path.startswith("/"):
        yield Diagnostic(span, f"'{clause.path}' is not an absolute path", hint="write the full path, such as /var")


def check_condition(cond: Condition, kind: str, known: Mapping[str, str], ctx: RuleContext) -> Iterator[Diagnostic]:
    if isinstance(cond, Not):
        yield from check_condition(cond.operand, kind, known, ctx)
        return
    if isinstance(cond, AllOf | AnyOf):
        for operand in cond.operands:
            yield from check_condition(operand, kind, known, ctx)
        return
    span = cond.field_span or cond.span or Span("", 0, 0, 0, 0)
    unknown = unknown_field(cond.field, span, known, kind)
    if unknown is not None:
        yield unknown
        return
    ftype = field_type(cond.field, known) or "any"
    if isinstance(cond, Compare):
        yield from check_value(cond.field, ftype, cond.op, cond.value, ctx.catalog.severities, known)
    elif isinstance(cond, MemberOf):
        for value in cond.values:
            yield from check_value(cond.field, ftype, "=", value, ctx.catalog.severities, known)
    elif isinstance(cond, Matches):
        diag = check_regex(cond.pattern, cond.pattern_span)
        if diag is not None:
            yield diag
    elif isinstance(cond, IsSet):
        return


# ---- actions ----------------------------------------------------------------------------------------------


def _check_action(action: object, kind: str, known: Mapping[str, str], ctx: RuleContext) -> Iterator[Diagnostic]:
    catalog = ctx.catalog
    name = action_kind(action)
    span: Span = action.span  # type: ignore[attr-defined]
    if name not in catalog.actions:
        yield Diagnostic(span, f"no integration provides the '{name}' action",
                         hint=_provides("actions", catalog.actions))
    if isinstance(action, Notify):
        yield from _target(action.team, action.team_span or span, ctx)
        if action.template is not None:
            yield from check_template(action.template, action.template_span, known, kind)
    elif isinstance(action, Reply):
        if kind not in _FROM_A_PERSON:
            yield Diagnostic(span, f"{_an(kind)} has no conversation to reply to",
                             hint="use 'notify <team>' to send it somewhere")
        yield from check_template(action.template, action.template_span, known, kind)
    elif isinstance(action, RunScript):
        if action.script not in catalog.scripts:
            yield from known_name("script", action.script, action.script_span or span, catalog.scripts)
        if action.timeout_s is not None and action.timeout_s <= 0:
            yield Diagnostic(
                action.timeout_span or span,
                "a timeout of zero would stop the script before it starts",
                hint="give a positive duration such as 30s, 10m or 1h, or leave the timeout out",
            )
        if action.memory_bytes is not None and action.memory_bytes < catalog.min_memory_bytes:
            yield Diagnostic(action.memory_span or span,
                             f"a memory limit of {action.memory_text} is too small to start a container",
                             hint=f"give at least {_size(catalog.min_memory_bytes)}")
        yield from _check_retry(action, span)
        for arg, arg_span in zip(action.args, action.args_spans, strict=False):
            yield from check_template(arg, arg_span, known, kind)
    elif isinstance(action, Silence):
        yield from _field_used(action.field, action.field_span or span, kind, known)
        if action.for_field is not None:
            yield from _field_used(action.for_field, action.for_span or span, kind, known)
        elif not action.for_s:
            yield Diagnostic(action.for_span or span, "a silence of zero seconds silences nothing")
    elif isinstance(action, SilenceWhere):
        for matcher in action.matchers:
            yield from check_template(matcher.template, _template_span(matcher), known, kind)
        if action.for_field is not None:
            yield from _field_used(action.for_field, action.for_span or span, kind, known)
        elif action.for_span is not None and not action.for_s:
            yield Diagnostic(action.for_span, "a silence of zero seconds silences nothing")
    elif isinstance(action, Escalate):
        yield from _check_escalate(action, ctx)
        if kind != "alert":
            yield Diagnostic(span, "only an alert can be acknowledged, so 'escalate' fits alert rules only")
    elif isinstance(action, Emit):
        return


def _check_escalate(action: Escalate, ctx: RuleContext) -> Iterator[Diagnostic]:
    """Known targets, delays that grow step by step (a later step after an earlier one), and a repeat of at least
    MIN_REPEAT_S: the bound on how often one alert can page someone."""
    if len(action.steps) > MAX_ESCALATION_STEPS:
        yield Diagnostic(action.steps[MAX_ESCALATION_STEPS].span,
                         f"an escalation has at most {MAX_ESCALATION_STEPS} steps")
    before: EscalationStep | None = None
    for step in action.steps:
        yield from _target(step.target, step.target_span or step.span, ctx)
        if before is not None and step.after_s <= before.after_s:
            yield Diagnostic(step.after_span or step.span,
                             f"this step comes after {format_duration(step.after_s)}, which is not later than the "
                             f"step before it (after {format_duration(before.after_s)})",
                             hint="list the steps in the order they happen, each later than the one before")
        before = step
    if action.repeat_s is not None and action.repeat_s < MIN_REPEAT_S:
        yield Diagnostic(action.repeat_span or action.span,
                         f"'repeat every {format_duration(action.repeat_s)}' is too often: repeat every "
                         f"{format_duration(MIN_REPEAT_S)} or more")


def _check_retry(action: RunScript, span: Span) -> Iterator[Diagnostic]:
    """`retry N times` takes 1 to 10; `backoff D` takes 1s to 1h and only goes with a retry."""
    if action.retries_span is not None and not MIN_RETRIES <= action.retries <= MAX_RETRIES:
        yield Diagnostic(
            action.retries_span,
            f"retry takes {MIN_RETRIES} to {MAX_RETRIES} times, found {action.retries}",
            hint="leave 'retry' out for a single attempt" if action.retries == 0 else None,
        )
    if action.backoff_s is None:
        return
    backoff_span = action.backoff_span or span
    if action.retries_span is None:
        yield Diagnostic(
            backoff_span,
            "'backoff' without 'retry' has nothing to wait for",
            hint="say how often to try again, such as 'retry 3 times backoff 30s'",
        )
    if not MIN_BACKOFF_S <= action.backoff_s <= MAX_BACKOFF_S:
        yield Diagnostic(
            backoff_span,
            f"backoff takes {format_duration(MIN_BACKOFF_S)} to {format_duration(MAX_BACKOFF_S)}, "
            f"found {format_duration(action.backoff_s)}",
            hint="the delay before the first retry; it doubles for each retry after it",
        )


# The helpers below run for nearly every clause and action of every rule and nearly always find nothing, so they
# return a tuple (empty: nothing to say) rather than make a generator each time.


def _target(target: str, span: Span, ctx: RuleContext) -> tuple[Diagnostic, ...]:
    if target.startswith("@"):
        return known_person(target, span, ctx.catalog)
    if target in ctx.teams:
        return ()
    return tuple(known_name("team", target, span, ctx.teams))


def known_person(target: str, span: Span, catalog: Catalog) -> tuple[Diagnostic, ...]:
    """`@name` must be a person the installation knows (when the catalog says who that is)."""
    people = catalog.people
    if people is None or target[1:] in people:
        return ()
    return tuple(known_name("person", target[1:], span, people))


def _size(n: int) -> str:
    for unit, size in (("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _template_span(matcher: SilenceMatcher) -> Span | None:
    """Where check_template counts columns from: the opening quote; a bare {field} starts one column later."""
    at = matcher.value_span
    if at is None or matcher.quoted:
        return at
    return Span(at.path, at.line, at.col - 1, at.end_line, at.end_col)


def _field_used(name: str, span: Span, kind: str, known: Mapping[str, str]) -> tuple[Diagnostic, ...]:
    diag = unknown_field(name, span, known, kind)
    return () if diag is None else (diag,)


def _positive(seconds: float, span: Span, what: str) -> tuple[Diagnostic, ...]:
    if seconds > 0:
        return ()
    return (Diagnostic(span, f"a {what} of zero seconds does nothing", hint="give a positive duration"),)


def known_name(
    what: str, name: str, span: Span, known: Collection[str], *, ordered: bool = False
) -> Iterator[Diagnostic]:
    """An 'unknown <what>' diagnostic, with a suggestion and the known names when they are few."""
    if name in known:  # the usual case, before any sorting
        return
    names = list(known) if ordered else sorted(known)
    message = f"unknown {what} '{name}'"
    suggestion = did_you_mean(name, names)
    if suggestion is not None:
        message += f"; did you mean '{suggestion}'?"
    listed, empty = _KINDS[what]
    if not names:
        hint: str | None = empty
    elif len(names) <= _MAX_LISTED:
        hint = f"{listed}: {', '.join(names)}"
    else:
        hint = None
    yield Diagnostic(span, message, hint=hint)


def _provides(what: str, names: Iterable[str]) -> str:
    listed = sorted(names)
    return f"this installation provides these {what}: {', '.join(listed)}" if listed else f"no {what} are provided"


def _an(kind: str) -> str:
    return f"an {kind} rule" if kind[:1] in "aeiou" else f"a {kind} rule"
