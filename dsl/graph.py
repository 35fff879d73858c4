"""The compiled event graph: which rules an event triggers, found in flat time however many rules there are.

Pure and immutable: the engine swaps a whole new graph in on reload. A rule's trigger is a tuple of equality
`Condition`s on the event's fields plus residual `Check`s (severity ranges, labels, `when` conditions, regexes),
all compiled once into one closure (`CompiledRule.matches`). The graph routes an event by kind, then looks up
an index on one selective literal per rule (`alert.service` when the rule names a service, else
`alert.severity`; `command.name` for commands, `button.action` for buttons, ...), so an event only meets the
rules that could match it; rules with no indexable literal wait in a per-kind residual list. Candidates are then
tested with the rest of their conditions and returned in file order, because every matching rule fires in file
order (DESIGN §3).

A missing field never matches: `alert.service` absent from the fields is not equal to any service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field  # `field` is also a Condition attribute
from typing import NamedTuple

from dsl.args import BoundArgs, CommandParam, bind_args
from dsl.frozen import quick_init
from dsl.matching import Check, Fields, Matcher, all_of
from dsl.plan import (
    Action,
    ButtonSpec,
    ConfirmStage,
    EmitAction,
    EscalateAction,
    MissingSpec,
    NotifyAction,
    ReplyAction,
    RunAction,
    ScheduleSpec,
    SilenceAction,
    SilenceWhereAction,
    Stage,
)

__all__ = [
    "Action",
    "ButtonSpec",
    "Check",
    "CompiledRule",
    "Condition",
    "ConfirmStage",
    "EmitAction",
    "EscalateAction",
    "EventGraph",
    "INDEX_FIELDS",
    "NotifyAction",
    "ReplyAction",
    "RunAction",
    "SilenceAction",
    "SilenceWhereAction",
    "compile_conditions",
]

# The fields an index may use per event kind, most selective first; a rule is indexed on the first it tests.
INDEX_FIELDS: Mapping[str, tuple[str, ...]] = {
    "alert": ("alert.service", "alert.severity"),
    "command": ("command.name",),
    "button": ("button.action",),
    "task": ("task.script",),
    "schedule": ("schedule.rule",),
    "heartbeat": ("heartbeat.rule",),
    "event": ("event.name",),
}

_MISSING = object()


@quick_init
@dataclass(frozen=True, slots=True)
class Condition:
    """The event's `field` must be present and equal to `value`; `text` is how the rule says it."""

    field: str
    value: object
    text: str = dataclass_field(default="", compare=False)

    def as_check(self) -> Check:
        name, want = self.field, self.value

        def equal(fields: Fields) -> bool:
            return bool(fields.get(name, _MISSING) == want)

        return Check(self.text or f"{name} = {want}", equal)


def compile_conditions(conditions: Iterable[Condition], checks: Sequence[Check] = ()) -> Matcher:
    """One closure testing all `conditions` then all `checks`, so matching an event is a call, not a walk."""
    pairs = tuple((c.field, c.value) for c in conditions)
    rest = all_of(checks) if checks else None
    if not pairs and rest is None:
        return _always
    if len(pairs) == 1 and rest is None:
        ((name, want),) = pairs

        def matches_one(fields: Fields) -> bool:
            return bool(fields.get(name, _MISSING) == want)

        return matches_one

    def matches_all(fields: Fields) -> bool:
        get = fields.get
        for name, want in pairs:
            if get(name, _MISSING) != want:
                return False
        return rest is None or rest(fields)

    return matches_all


def _always(fields: Fields) -> bool:
    return True


@quick_init
@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule, ready to run: what triggers it, who may trigger it, its stages and what it does.

    `name` is the rule's own name or `PATH:LINE` for an unnamed one; `fingerprint` is a hash of what the rule
    does (not where it is written or its comments), so a reload can tell an unchanged rule from a changed one.
    `matches(fields)` is built from `conditions` and `checks` when it is first asked for (the graph's index
    builds its own matcher for most rules, so most never need this one); `explain(fields)` names the first of
    them that fails. `stages` are the clauses the engine runs before the actions, in written order except that a
    confirmation comes last.
    """

    name: str
    location: str
    kind: str
    command: str | None
    required_roles: tuple[str, ...]
    actions: tuple[Action, ...]
    fingerprint: str
    conditions: tuple[Condition, ...] = ()
    checks: tuple[Check, ...] = ()
    stages: tuple[Stage, ...] = ()
    params: tuple[CommandParam, ...] = ()
    schedule: ScheduleSpec | None = None
    missing: MissingSpec | None = None  # `on alert missing NAME for D`
    _matcher: Matcher | None = dataclass_field(default=None, init=False, repr=False, compare=False)

    @property
    def state_key(self) -> str:
        """What the rule's clause state (dedupe windows, rate-limit counts, groups, escalations, silences) is kept
        under: its name, or, for an unnamed rule, what it does; so reformatting or moving an unnamed rule (which
        changes its PATH:LINE name) keeps its state, while changing what it does starts afresh."""
        return self.name if self.name != self.location else f"~{self.fingerprint[:24]}"

    @property
    def matches(self) -> Matcher:
        """One closure testing the whole trigger (`conditions`, then `checks`) against an event's fields."""
        matcher = self._matcher
        if matcher is None:  # made once; two threads making it at once make the same closure
            matcher = compile_conditions(self.conditions, self.checks)
            object.__setattr__(self, "_matcher", matcher)
        return matcher

    def explain(self, fields: Fields) -> str | None:
        """The first clause of the trigger that `fields` fail, as written; None when the rule matches."""
        for check in (*(c.as_check() for c in self.conditions), *self.checks):
            if not check.test(fields):
                return check.text
        return None

    def bind_args(self, args: Sequence[str]) -> BoundArgs | str:
        """A command's words typed by its spec (name -> value), or why they do not fit (a str)."""
        return bind_args(self.params, args, self.command or "")

    @property
    def button_specs(self) -> tuple[ButtonSpec, ...]:
        """Every button this rule's notifications send."""
        return tuple(b for a in self.actions if isinstance(a, NotifyAction) for b in a.button_list)


class _Entry(NamedTuple):
    position: int
    rule: CompiledRule
    rest: Matcher  # the rule's conditions other than the one its index already checked


class _Route:
    """The rules of one event kind: an index per field, and the rules that have no indexable literal."""

    __slots__ = ("indexes", "residual")

    def __init__(self) -> None:
        self.indexes: dict[str, dict[object, list[_Entry]]] = {}
        self.residual: list[_Entry] = []

    def add(self, position: int, rule: CompiledRule) -> None:
        by_field = {c.field: c for c in rule.conditions}
        key = next((f for f in INDEX_FIELDS.get(rule.kind, ()) if f in by_field), None)
        if key is None:
            self.residual.append(_Entry(position, rule, rule.matches))
            return
        rest = compile_conditions((c for c in rule.conditions if c is not by_field[key]), rule.checks)
        bucket = self.indexes.setdefault(key, {}).setdefault(by_field[key].value, [])
        bucket.append(_Entry(position, rule, rest))

    def match(self, fields: Fields) -> list[CompiledRule]:
        groups: list[list[_Entry]] = []
        for name, buckets in self.indexes.items():
            value = fields.get(name, _MISSING)
            if value is _MISSING:
                continue
            try:
                bucket = buckets.get(value)
            except TypeError:  # an unhashable value equals none of the literals
                continue
            if bucket:
                groups.append(bucket)
        if self.residual:
            groups.append(self.residual)
        if len(groups) == 1:
            return [entry.rule for entry in groups[0] if entry.rest(fields)]
        hits = [entry for group in groups for entry in group if entry.rest(fields)]
        if len(groups) > 1:
            hits.sort(key=lambda entry: entry.position)
        return [entry.rule for entry in hits]


class EventGraph:
    """Every compiled rule, in file order (files in the order given), with a router and indexes over them."""

    __slots__ = ("_commands", "_routes", "rules")

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        routes: dict[str, _Route] = {}
        commands: dict[str, list[CompiledRule]] = {}
        for position, rule in enumerate(self.rules):
            routes.setdefault(rule.kind, _Route()).add(position, rule)
            if rule.command is not None:
                commands.setdefault(rule.command, []).append(rule)
        self._routes = routes
        self._commands = {name: tuple(found) for name, found in commands.items()}

    def match(self, kind: str, fields: Fields) -> list[CompiledRule]:
        """Every rule of `kind` whose trigger matches `fields`, in file order."""
        route = self._routes.get(kind)
        return route.match(fields) if route is not None else []

    def commands(self) -> dict[str, tuple[CompiledRule, ...]]:
        """Command name to the rules it triggers, in file order."""
        return dict(self._commands)

    def of_kind(self, kind: str) -> tuple[CompiledRule, ...]:
        """Every rule of one trigger kind, in file order (for a dry run's "why not")."""
        return tuple(rule for rule in self.rules if rule.kind == kind)

    def __repr__(self) -> str:
        return f"EventGraph({len(self.rules)} rules)"
