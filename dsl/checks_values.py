"""Checking one field use: is the field known for this trigger, and is the value written what it needs?

Shared by conditions, templates and the clauses that name a field (`dedupe by`, `per`, `silence ... by`).
Each function returns diagnostics and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from dsl.ast import Span, Value
from dsl.diagnostics import Diagnostic, did_you_mean
from dsl.fields import field_type
from dsl.templates import placeholders
from dsl.values import is_duration, is_number

ORDERED_TYPES = frozenset({"number", "duration", "severity", "any"})
_TYPE_WORDS = {
    "number": "a number",
    "duration": "a duration such as 30s, 10m or 1h",
    "severity": "a severity",
    "text": "text",
    "user": "a person",
    "map": "a map",
    "list": "a list",
    "any": "a value",
}


def unknown_field(name: str, span: Span, known: Mapping[str, str], kind: str) -> Diagnostic | None:
    """None when `name` is a field of this trigger; else an 'unknown field' diagnostic with a suggestion."""
    if field_type(name, known) is not None:
        return None
    choices = [f for f in known if not f.endswith(".*")]
    message = f"unknown field '{name}' for {_a(kind)} rule"
    suggestion = did_you_mean(name, choices)
    if suggestion is not None:
        message += f"; did you mean '{suggestion}'?"
    own = sorted(f for f in choices if f.startswith(f"{kind}."))
    hint = f"{kind} fields: {', '.join(own)}" if own and len(own) <= 12 else None
    return Diagnostic(span, message, hint=hint)


def check_value(
    name: str, ftype: str, op: str, value: Value, severities: Sequence[str], known: Mapping[str, str]
) -> Iterator[Diagnostic]:
    """Problems with comparing field `name` (of type `ftype`) by `op` with `value`."""
    span = value.span or Span("", 0, 0, 0, 0)
    if op in ("<", "<=", ">", ">=") and ftype not in ORDERED_TYPES:
        yield Diagnostic(
            span,
            f"'{op}' compares numbers, durations or severities, and '{name}' is {_TYPE_WORDS[ftype]}",
            hint="use = or != (or 'matches /regex/') for text",
        )
        return
    if ftype in ("map", "list"):
        example = f"{name}.env" if ftype == "map" else None
        yield Diagnostic(
            span,
            f"'{name}' is {_TYPE_WORDS[ftype]} and cannot be compared with a value",
            hint=f"compare one of its keys, such as {example}" if example else "test it with 'is set'",
        )
        return
    text = value.text
    if ftype == "number" and not (value.kind == "word" and is_number(text)):
        found = "the duration" if value.kind == "word" and is_duration(text) else "quoted text" if (
            value.kind == "text") else None
        yield Diagnostic(span, f"expected a number for '{name}', found {_found(found, text)}")
    elif ftype == "duration" and not (value.kind == "word" and (is_duration(text) or text == "0")):
        found = "the number" if value.kind == "word" and is_number(text) else None
        yield Diagnostic(
            span,
            f"expected a duration such as 30s, 10m or 1h for '{name}', found {_found(found, text)}",
        )
    elif ftype == "severity" and text not in severities:
        message = f"unknown severity '{text}'"
        suggestion = did_you_mean(text, severities)
        if suggestion is not None:
            message += f"; did you mean '{suggestion}'?"
        yield Diagnostic(span, message, hint=f"severities: {', '.join(severities)}")
    elif value.kind == "word" and text in known:
        yield Diagnostic(
            span,
            f"'{text}' is a field; a condition compares a field with a value, not with another field",
            hint=f'quote it ("{text}") if you mean the text',
        )


def check_regex(pattern: str, span: Span | None) -> Diagnostic | None:
    """An invalid regular expression, pointed at the character where it goes wrong."""
    try:
        re.compile(pattern)
    except re.error as err:
        where = span or Span("", 0, 0, 0, 0)
        col = where.col + 1 + (err.pos or 0)
        text = str(err.msg)
        return Diagnostic(
            Span(where.path, where.line, col, where.line, col + 1),
            f"invalid regular expression: {text}",
            hint="the pattern is a Python regular expression",
        )
    return None


def check_template(template: str, span: Span | None, known: Mapping[str, str], kind: str) -> Iterator[Diagnostic]:
    """Every `{placeholder}` names a field of the trigger; every brace is a placeholder or doubled."""
    found, problems = placeholders(template)
    where = span or Span("", 0, 0, 0, 0)
    for problem in problems:
        col = where.col + 1 + problem.offset
        yield Diagnostic(Span(where.path, where.line, col, where.line, col + problem.width), problem.message)
    for placeholder in found:
        col = where.col + 2 + placeholder.offset
        at = Span(where.path, where.line, col, where.line, col + len(placeholder.field))
        diag = unknown_field(placeholder.field, at, known, kind)
        if diag is not None:
            yield diag


def _found(what: str | None, text: str) -> str:
    return f"{what} '{text}'" if what and what != "quoted text" else ("quoted text" if what else f"'{text}'")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
