"""Conditions compiled once into closures: equality on a field, and the residual tests of a rule's trigger.

A `Check` pairs a closure with the clause's text, so a dry run can say which clause failed first
(`CompiledRule.explain`). Missing is not empty: every test on a field the event lacks is false, except `not`
of it (which is true) and `is set` (false). Values are compared by the field's type, known at compile time:
numbers and durations numerically, severities by their rank on the catalog's scale, everything else as text.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from dsl.ast import AllOf, AnyOf, Compare, Condition, IsSet, Matches, MemberOf, Not, Value
from dsl.fields import MISSING, field_type, getter
from dsl.frozen import quick_init
from dsl.values import duration_seconds, is_duration, is_number, number

Fields: TypeAlias = Mapping[str, object]
Matcher: TypeAlias = Callable[[Fields], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@quick_init
@dataclass(frozen=True, slots=True)
class Check:
    """One residual test of a rule: `text` is the clause as written (canonical), `test` decides it."""

    text: str
    test: Matcher = field(compare=False, repr=False)


@quick_init
@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the compiler knows to compile a comparison: each field's type and the severity scale."""

    fields: Mapping[str, str]
    severities: Sequence[str]


def compile_condition(cond: Condition, info: TypeInfo) -> Matcher:
    """A closure deciding `cond` for an event's fields."""
    if isinstance(cond, Not):
        inner = compile_condition(cond.operand, info)
        return lambda fields: not inner(fields)
    if isinstance(cond, AllOf):
        parts = tuple(compile_condition(o, info) for o in cond.operands)
        return lambda fields: all(p(fields) for p in parts)
    if isinstance(cond, AnyOf):
        parts = tuple(compile_condition(o, info) for o in cond.operands)
        return lambda fields: any(p(fields) for p in parts)
    get = getter(cond.field)
    if isinstance(cond, IsSet):
        return lambda fields: get(fields) is not MISSING
    if isinstance(cond, Matches):
        return regex_test(get, cond.pattern)
    ftype = field_type(cond.field, info.fields) or "any"
    if isinstance(cond, MemberOf):
        tests = tuple(value_test(get, "=", v, ftype, info.severities) for v in cond.values)
        return lambda fields: any(t(fields) for t in tests)
    assert isinstance(cond, Compare)
    return value_test(get, cond.op, cond.value, ftype, info.severities)


def regex_test(get: Callable[[Fields], object], pattern: str) -> Matcher:
    search = re.compile(pattern).search

    def test(fields: Fields) -> bool:
        value = get(fields)
        return value is not MISSING and value is not None and search(str(value)) is not None

    return test


def value_test(
    get: Callable[[Fields], object], op: str, value: Value, ftype: str, severities: Sequence[str]
) -> Matcher:
    """`field OP value` with the comparison the field's type calls for."""
    compare = _OPS[op]
    if ftype == "severity":
        rank = {name: i for i, name in enumerate(severities)}
        want = rank.get(value.text, -1)

        def by_rank(fields: Fields) -> bool:
            name = get(fields)
            found = rank.get(name) if isinstance(name, str) else None
            return found is not None and compare(found, want)

        return by_rank
    numeric = _numeric(value, ftype)
    if numeric is not None:
        return _numeric_test(get, compare, numeric)
    text = value.text

    def as_text(fields: Fields) -> bool:
        found = get(fields)
        if found is MISSING or found is None:
            return False
        return compare(found if isinstance(found, str) else str(found), text)

    return as_text


def _numeric(value: Value, ftype: str) -> float | None:
    if value.kind != "word":
        return None
    if ftype == "duration" and is_duration(value.text):
        return duration_seconds(value.text)
    if ftype in ("number", "duration", "any") and is_number(value.text):
        return float(number(value.text))
    return None


def _numeric_test(get: Callable[[Fields], object], compare: Callable[[object, object], bool], want: float) -> Matcher:
    def test(fields: Fields) -> bool:
        found = get(fields)
        if isinstance(found, bool) or found is MISSING or found is None:
            return False
        if not isinstance(found, int | float):
            try:
                found = float(found)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
        return compare(found, want)

    return test


def all_of(checks: Sequence[Check]) -> Matcher:
    """One closure testing every check in order (a rule's residual)."""
    tests = tuple(c.test for c in checks)
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]

    def test_all(fields: Fields) -> bool:
        for test in tests:
            if not test(fields):
                return False
        return True

    return test_all


def _always(fields: Fields) -> bool:
    return True
