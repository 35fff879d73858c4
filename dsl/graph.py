"""The compiled event graph: which rules an event triggers, found in flat time however many rules there are.

Pure and immutable: the engine swaps a whole new graph in on reload. Each rule's trigger is a tuple of
equality `Condition`s on the event's fields, compiled once into a closure (`CompiledRule.matches`). The graph
routes an event by kind, then looks up an index on one selective literal per rule (`alert.service` when the
rule names a service, else `alert.severity`; `command.name` for commands), so an event only meets the rules
that could match it; rules with no indexable literal wait in a per-kind residual list. Candidates are then
tested with the rest of their conditions and returned in file order, because every matching rule fires in file
order (DESIGN §3).

A missing field never matches: `alert.service` absent from the fields is not equal to any service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

Fields: TypeAlias = Mapping[str, object]
Matcher: TypeAlias = Callable[[Fields], bool]

# The fields an index may use per event kind, most selective first; a rule is indexed on the first it tests.
INDEX_FIELDS: Mapping[str, tuple[str, ...]] = {
    "alert": ("alert.service", "alert.severity"),
    "command": ("command.name",),
}

_MISSING = object()


@dataclass(frozen=True, slots=True)
class NotifyAction:
    """Send a notification to a team, optionally with buttons."""

    team: str
    buttons: bool


@dataclass(frozen=True, slots=True)
class RunAction:
    """Run a whitelisted script, always sandboxed; `timeout_s` None means the engine's default."""

    script: str
    timeout_s: float | None


Action: TypeAlias = NotifyAction | RunAction


@dataclass(frozen=True, slots=True)
class Condition:
    """The event's `field` must be present and equal to `value`."""

    field: str
    value: object


def compile_conditions(conditions: Iterable[Condition]) -> Matcher:
    """One closure testing all `conditions`, so matching an event is a call, not a walk over data."""
    pairs = tuple((c.field, c.value) for c in conditions)
    if not pairs:
        return _always
    if len(pairs) == 1:
        ((name, want),) = pairs

        def matches_one(fields: Fields) -> bool:
            return bool(fields.get(name, _MISSING) == want)

        return matches_one

    def matches_all(fields: Fields) -> bool:
        get = fields.get
        for name, want in pairs:
            if get(name, _MISSING) != want:
                return False
        return True

    return matches_all


def _always(fields: Fields) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule, ready to run: what triggers it, who may trigger it, and what it does.

    `name` is the rule's own name or `PATH:LINE` for an unnamed one; `fingerprint` is a hash of what the rule
    does (not where it is written), so a reload can tell an unchanged rule from a changed one.
    `matches(fields)` is built from `conditions` when the rule is made.
    """

    name: str
    location: str
    kind: str
    command: str | None
    required_roles: tuple[str, ...]
    actions: tuple[Action, ...]
    fingerprint: str
    conditions: tuple[Condition, ...] = ()
    matches: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches", compile_conditions(self.conditions))


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
        rest = compile_conditions(c for c in rule.conditions if c is not by_field[key])
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

    def __repr__(self) -> str:
        return f"EventGraph({len(self.rules)} rules)"
