"""The canonical formatter: `format_source(text, path) -> str`, keeping every comment, idempotent.

Each rule and team is printed by `dsl.printer` (one spelling per construct). A one-liner stays one line; a block
gets a two-space indent and one construct per line. Comment lines stay before the construct that follows them
(inside a block, indented with it); a comment at the end of a line stays at the end of the last construct that
started on that line. Runs of blank lines between rules shrink to one; blank lines inside a block go.

A file with syntax errors is not formatted: `FormatError` (a `ValueError`) carries the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.ast import Rule, Span, TeamDecl
from dsl.diagnostics import Diagnostic
from dsl.parser import parse
from dsl.printer import print_action, print_clause, print_rule, print_team, print_trigger

INDENT = "  "
_REGEX_BEFORE = ("matching", "matches", "=~", "!~")


class FormatError(ValueError):
    """The text does not parse, so it cannot be formatted; `diagnostics` says why."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(f"{len(diagnostics)} syntax error(s)")
        self.diagnostics = diagnostics


@dataclass(frozen=True, slots=True)
class _Line:
    code: str
    comment: str | None  # with its '#'


def split_comment(line: str) -> _Line:
    """A line's code and its comment: the first '#' outside quoted text and regular expressions."""
    in_string = in_regex = False
    index = 0
    while index < len(line):
        char = line[index]
        if in_string or in_regex:
            if char == "\\":
                index += 2
                continue
            if (in_string and char == '"') or (in_regex and char == "/"):
                in_string = in_regex = False
        elif char == '"':
            in_string = True
        elif char == "/" and line[:index].rstrip().endswith(_REGEX_BEFORE):
            in_regex = True
        elif char == "#":
            return _Line(line[:index].rstrip(), line[index:].rstrip())
        index += 1
    return _Line(line.rstrip(), None)


def format_source(text: str, path: str) -> str:
    """`text` in canonical form; raises `FormatError` when it has syntax errors."""
    rule_file, diags = parse(text, path)
    if rule_file is None:
        raise FormatError(diags)
    lines = [split_comment(line) for line in text.removeprefix("\ufeff").split("\n")]
    items: list[Rule | TeamDecl] = sorted(
        [*rule_file.rules, *rule_file.teams], key=lambda item: item.span.line
    )
    out: list[str] = []
    cursor = 1  # the next source line not yet written
    for item in items:
        out.extend(_between(lines, cursor, item.span.line, first=not out))
        if isinstance(item, TeamDecl):
            out.append(_with_comment(print_team(item), lines[item.span.line - 1].comment))
            cursor = item.span.end_line + 1
        else:
            out.extend(_rule(item, lines))
            cursor = item.span.end_line + 1
    out.extend(_between(lines, cursor, len(lines) + 1, first=not out))
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _between(lines: list[_Line], start: int, stop: int, *, first: bool) -> list[str]:
    """Comment lines and (at most one) blank line between two items."""
    out: list[str] = []
    for number in range(start, stop):
        line = lines[number - 1]
        if line.comment is not None and not line.code:
            out.append(line.comment)
        elif not line.code.strip() and out[-1:] != [""] and not (first and not out):
            out.append("")
    return out


def _with_comment(code: str, comment: str | None) -> str:
    return f"{code}  {comment}" if comment else code


def _rule(rule: Rule, lines: list[_Line]) -> list[str]:
    if rule.name is None:
        (printed,) = print_rule(rule)
        comments = [lines[n - 1].comment for n in range(rule.span.line, rule.span.end_line + 1)]
        return [_with_comment(printed, " ".join(c for c in comments if c) or None)]
    nodes: list[tuple[Span, str]] = [(rule.trigger.span, print_trigger(rule.trigger))]
    nodes += [(c.span, print_clause(c)) for c in rule.clauses]
    nodes += [(a.span, print_action(a)) for a in rule.actions]
    last_on_line: dict[int, int] = {}
    for index, (span, _) in enumerate(nodes):
        last_on_line[span.line] = index
    out = [_with_comment(f"rule {rule.name}:", lines[rule.span.line - 1].comment)]
    written: set[int] = {rule.span.line}
    for index, (span, code) in enumerate(nodes):
        for number in range(rule.span.line + 1, span.line):
            line = lines[number - 1]
            if number not in written and line.comment is not None and not line.code:
                out.append(INDENT + line.comment)
                written.add(number)
        comment = lines[span.line - 1].comment if last_on_line.get(span.line) == index else None
        out.append(_with_comment(INDENT + code, comment))
        written.add(span.line)
    # comment lines left inside the block (between the last node's line and its end) go after it
    for number in range(rule.span.line + 1, rule.span.end_line + 1):
        line = lines[number - 1]
        if number not in written and line.comment is not None and not line.code:
            out.append(INDENT + line.comment)
    return out
