"""Lowering: a checked rule's AST to its runnable form (`CompiledRule`): index conditions, residual checks,
stages, action plan, typed command parameters and fingerprints.

Fingerprints hash the canonical text (`dsl.printer`) of what the rule does, never its name, place, comments or
spelling, so `firing` written or left out, `sandboxed` written or not, a block or a one-liner, all hash alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from dsl.args import CommandParam
from dsl.ast import (
    AlertTrigger,
    ButtonTrigger,
    CheckDisk,
    CommandTrigger,
    Dedupe,
    Emit,
    Escalate,
    EventTrigger,
    Group,
    MessageTrigger,
    MissingTrigger,
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
    Value,
    When,
)
from dsl.catalog import Catalog
from dsl.checks_rule import PARAM_FIELD_TYPES
from dsl.fields import MISSING, Getter, getter
from dsl.graph import CompiledRule, Condition
from dsl.kinds import trigger_kind
from dsl.matching import Check, Fields, Matcher, TypeInfo, compile_condition, regex_test, value_test
from dsl.network import canonical_entry
from dsl.plan import (
    Action,
    ButtonSpec,
    CheckDiskStage,
    ConfirmStage,
    DedupeStage,
    EmitAction,
    EscalateAction,
    EscalateStep,
    GroupStage,
    MissingSpec,
    NotifyAction,
    RateLimitStage,
    ReplyAction,
    RequireRoleStage,
    RunAction,
    ScheduleSpec,
    SilenceAction,
    SilenceWhereAction,
    Stage,
)
from dsl.printer import body_lines, print_action, print_clause, print_param, print_trigger
from dsl.values import duration_seconds, is_duration, is_int, slash

# Bump when the canonical form changes meaning, so old and new fingerprints never compare equal by accident.
FINGERPRINT_VERSION = 2
_VERSION_LINE = f"v{FINGERPRINT_VERSION}"


def lower_rule(
    rule: Rule,
    catalog: Catalog,
    specs: Mapping[str, tuple[Param, ...]] | None = None,
    *,
    kind_fields: dict[str, Mapping[str, str]] | None = None,
) -> CompiledRule:
    """The runnable form of a checked rule; `specs` holds each command's argument spec (shared by its rules).

    `kind_fields` caches `catalog.fields_of(kind)` across the rules of one compile.
    """
    trigger = rule.trigger
    kind = trigger_kind(trigger)
    location = rule.span.location
    name = rule.name if rule.name is not None else location
    params: tuple[Param, ...] = ()
    if isinstance(trigger, CommandTrigger):
        params = (specs or {}).get(trigger.name, trigger.params) or trigger.params
    known = kind_fields.get(kind) if kind_fields is not None else None
    if known is None:
        known = catalog.fields_of(kind)
        if kind_fields is not None:
            kind_fields[kind] = known
    if params:
        known = dict(known)
        for param in params:
            known[f"command.{param.name}"] = PARAM_FIELD_TYPES.get(param.type, "text")
    info = TypeInfo(known, catalog.severities)
    conditions, checks = _trigger_tests(rule, name, info)
    # Each clause and action printed once: for its check's text, its state's fingerprint and the rule's.
    clause_texts = [print_clause(c) for c in rule.clauses]
    action_texts = [print_action(a) for a in rule.actions]
    stages = []
    for clause, text in zip(rule.clauses, clause_texts, strict=True):
        if isinstance(clause, When):
            checks.append(Check(text, compile_condition(clause.condition, info)))
        else:
            stages.append(_stage(clause, text))
    # A confirmation is asked for last: nobody should confirm a run that a rate limit, a dedupe window or a full disk
    # then refuses. The other clauses keep the order written.
    stages.sort(key=lambda stage: isinstance(stage, ConfirmStage))
    lines = [print_trigger(trigger), *clause_texts, *action_texts]
    return CompiledRule(
        name,
        location,
        kind,
        trigger.name if isinstance(trigger, CommandTrigger) else None,
        tuple(c.role for c in rule.clauses if isinstance(c, RequireRole)) if stages else (),
        tuple([_action(a, text) for a, text in zip(rule.actions, action_texts, strict=True)]),
        _rule_hash(lines, params),
        tuple(conditions),
        tuple(checks),
        tuple(stages),
        tuple([_param(p) for p in params]) if params else (),
        _schedule(trigger) if isinstance(trigger, ScheduleTrigger) else None,
        MissingSpec(trigger.name, trigger.for_s) if isinstance(trigger, MissingTrigger) else None,
    )


def _trigger_tests(rule: Rule, name: str, info: TypeInfo) -> tuple[list[Condition], list[Check]]:
    """Equality conditions (the index picks one) and residual checks, most selective first."""
    t = rule.trigger
    conditions: list[Condition] = []
    checks: list[Check] = []
    if isinstance(t, AlertTrigger):
        if t.service is not None:
            conditions.append(Condition("alert.service", t.service, f"from {t.service}"))
        if t.severity is not None and t.severity_op == "=":
            conditions.append(Condition("alert.severity", t.severity, f"severity {t.severity}"))
        conditions.append(Condition("alert.status", t.status, t.status))
        if t.severity is not None and t.severity_op != "=":
            test = value_test(getter("alert.severity"), t.severity_op, Value(t.severity, "word"), "severity",
                              info.severities)
            checks.append(Check(f"severity {t.severity_op} {t.severity}", test))
        for label in t.labels:
            get = getter(f"alert.labels.{label.name}")
            if label.op in ("=~", "!~"):
                found = regex_test(get, label.value)
                text = f"label {label.name} {label.op} {slash(label.value)}"
                checks.append(Check(text, found if label.op == "=~" else _present_and_not(get, found)))
            else:
                test = value_test(get, label.op, Value(label.value, "text"), "text", info.severities)
                checks.append(Check(f"label {label.name} {label.op} {label.value}", test))
    elif isinstance(t, CommandTrigger):
        conditions.append(Condition("command.name", t.name, f"command {t.name}"))
    elif isinstance(t, ButtonTrigger):
        conditions.append(Condition("button.action", t.name, f"button {t.name}"))
    elif isinstance(t, TaskTrigger):
        conditions.append(Condition("task.script", t.script, f"task {t.script}"))
        if t.status is not None:
            conditions.append(Condition("task.status", t.status, t.status))
    elif isinstance(t, ScheduleTrigger):
        conditions.append(Condition("schedule.rule", name, print_trigger(t)))
    elif isinstance(t, MissingTrigger):
        conditions.append(Condition("heartbeat.rule", name, print_trigger(t)))
    elif isinstance(t, EventTrigger):
        conditions.append(Condition("event.name", t.name, f"event {t.name}"))
    elif isinstance(t, MessageTrigger):
        checks.append(Check(f"matching {slash(t.pattern)}", regex_test(getter("message.text"), t.pattern)))
    return conditions, checks


def _present_and_not(get: Getter, found: Matcher) -> Matcher:
    """`!~`: the label is present and the regex finds nothing in it (missing is not empty)."""

    def test(fields: Fields) -> bool:
        value = get(fields)
        return value is not MISSING and value is not None and not found(fields)

    return test


def _stage(clause: object, text: str) -> Stage:
    print_ = _hash(f"v{FINGERPRINT_VERSION}\n{text}")  # clause_fingerprint(clause)
    if isinstance(clause, RequireRole):
        return RequireRoleStage(clause.role, print_)
    if isinstance(clause, RequireConfirmation):
        return ConfirmStage(clause.role, clause.within_s, print_)
    if isinstance(clause, Dedupe):
        return DedupeStage(clause.field, clause.for_s, print_)
    if isinstance(clause, Group):
        return GroupStage(clause.field, clause.within_s, print_)
    if isinstance(clause, RateLimit):
        return RateLimitStage(clause.count, clause.per_s, clause.key, print_)
    assert isinstance(clause, CheckDisk)
    return CheckDiskStage(clause.path, clause.free_bytes, print_)


def _action(action: object, text: str) -> Action:
    """The plan of one action; `text` is its canonical text (what silence and escalate fingerprint)."""
    if isinstance(action, Notify):
        buttons = tuple(ButtonSpec(b.name, b.arg) for b in action.button_list)
        return NotifyAction(action.team, action.buttons, action.template, buttons)
    if isinstance(action, Reply):
        return ReplyAction(action.template)
    if isinstance(action, RunScript):
        return RunAction(
            action.script,
            action.timeout_s,
            action.memory_bytes,
            action.network or "none",
            action.args,
            network_allow=tuple(canonical_entry(a) for a in action.network_allow),
            retries=action.retries,
            backoff_s=action.backoff_s,
        )
    if isinstance(action, Emit):
        return EmitAction(action.event)
    if isinstance(action, Silence):
        return SilenceAction(action.field, action.for_s, action.for_field, _hash(text))
    if isinstance(action, SilenceWhere):
        return SilenceWhereAction(tuple((m.label, m.template) for m in action.matchers), action.for_s,
                                  action.for_field, _hash(text))
    assert isinstance(action, Escalate)
    steps = tuple(EscalateStep(step.target, step.after_s) for step in action.steps)
    return EscalateAction(steps, action.repeat_s, _hash(text))


def _param(param: Param) -> CommandParam:
    default: object = None
    if param.default is not None:
        text = param.default.text
        if param.type == "int" and is_int(text):
            default = int(text)
        elif param.type == "duration" and is_duration(text):
            default = duration_seconds(text)
        else:
            default = text
    return CommandParam(param.name, param.type, param.choices, param.optional, default)


def _schedule(t: ScheduleTrigger) -> ScheduleSpec:
    return ScheduleSpec(how=t.how, every_s=t.every_s, at=t.at, cron=t.cron, zone=t.zone)


def rule_fingerprint(rule: Rule, params: Sequence[Param] = ()) -> str:
    """sha256 of the canonical text of what a rule does (and its command's argument spec)."""
    return _rule_hash(body_lines(rule), params)


def _rule_hash(body: list[str], params: Sequence[Param]) -> str:
    lines = [_VERSION_LINE, *body]
    if params:
        lines.extend(print_param(p) for p in params)
    return _hash("\n".join(lines))


def clause_fingerprint(clause: object) -> str:
    """sha256 of one clause's canonical text: the key of its state across reloads."""
    return _hash(f"v{FINGERPRINT_VERSION}\n{print_clause(clause)}")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

