"""lark's parse tree to the AST (`dsl.ast`), with a `Span` on every node.

This is a plain walk over the tree, not a lark `Transformer`, and it never raises: exceptions raised inside
a transformer come out wrapped in lark's `VisitError`. The only problems found here are those the grammar
leaves to it on purpose: a filter or option written twice ("each at most once" is clearer as a message than
as a grammar that spells out every order). Everything about meaning (unknown teams, timeouts) is in
`dsl.checks`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lark import Token, Tree

from dsl.ast import (
    Action,
    AlertTrigger,
    Clause,
    CommandTrigger,
    Notify,
    RequireRole,
    Rule,
    RunScript,
    Span,
    Trigger,
)
from dsl.diagnostics import Diagnostic

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"([0-9]+)([dhms])")


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `30s`, `10m`, `2h30m` (parts add up)."""
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text)))


def build_rules(tree: Tree[Token], *, path: str, line_offset: int) -> tuple[list[Rule], list[Diagnostic]]:
    """The rules in `tree` (parsed from the lines after `line_offset`), and the options written twice."""
    builder = _Builder(path, line_offset)
    rules = [builder.rule(node) for node in _subtrees(tree)]
    return rules, builder.diagnostics


@dataclass
class _Builder:
    path: str
    line_offset: int
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def span(self, node: Tree[Token] | Token) -> Span:
        if isinstance(node, Token):
            line, col, end_line, end_col = node.line, node.column, node.end_line, node.end_column
        else:
            meta = node.meta
            line, col, end_line, end_col = meta.line, meta.column, meta.end_line, meta.end_column
        assert line is not None and col is not None and end_line is not None and end_col is not None
        return Span(self.path, line + self.line_offset, col, end_line + self.line_offset, end_col)

    def cover(self, first: Tree[Token] | Token, last: Tree[Token] | Token) -> Span:
        """From the start of `first` to the end of `last`: a rule's span without the line end lark adds."""
        start, end = self.span(first), self.span(last)
        return Span(self.path, start.line, start.col, end.end_line, end.end_col)

    def rule(self, node: Tree[Token]) -> Rule:
        name_token = _token(node, "NAME") if node.data == "block_rule" else None
        parts = list(_subtrees(node))
        trigger = self.trigger(parts[0])
        clauses: list[Clause] = []
        actions: list[Action] = []
        for part in parts[1:]:
            built = _PARTS[part.data](self, part)
            if isinstance(built, RequireRole):
                clauses.append(built)
            else:
                actions.append(built)
        return Rule(
            name=str(name_token) if name_token is not None else None,
            trigger=trigger,
            clauses=tuple(clauses),
            actions=tuple(actions),
            span=self.cover(node.children[0], node.children[-1]),
            name_span=self.span(name_token) if name_token is not None else None,
        )

    def trigger(self, node: Tree[Token]) -> Trigger:
        if node.data == "command_trigger":
            return CommandTrigger(name=str(_token(node, "NAME")), span=self.span(node))
        values = self._once(
            node, {"status": "the alert status", "severity": "'severity'", "service": "'from'"}
        )
        status = values.get("status")
        severity = values.get("severity")
        service = values.get("service")
        severity_name = _token(severity, "NAME") if severity is not None else None
        return AlertTrigger(
            status=str(status.children[0]) if status is not None else "firing",
            severity=str(severity_name) if severity_name is not None else None,
            service=str(_token(service, "NAME")) if service is not None else None,
            span=self.span(node),
            severity_span=self.span(severity_name) if severity_name is not None else None,
        )

    def require_role(self, node: Tree[Token]) -> RequireRole:
        role = _token(node, "NAME")
        return RequireRole(role=str(role), span=self.span(node), role_span=self.span(role))

    def notify(self, node: Tree[Token]) -> Notify:
        buttons = any(child.data == "buttons" for child in _subtrees(node))
        team = _token(node, "NAME")
        return Notify(team=str(team), buttons=buttons, span=self.span(node), team_span=self.span(team))

    def run(self, node: Tree[Token]) -> RunScript:
        options = self._once(node, {"sandboxed": "'sandboxed'", "timeout": "'timeout'"})
        timeout = options.get("timeout")
        duration = _token(timeout, "DURATION") if timeout is not None else None
        script = _token(node, "SCRIPT")
        return RunScript(
            script=str(script),
            sandboxed="sandboxed" in options,
            timeout_s=duration_seconds(duration) if duration is not None else None,
            span=self.span(node),
            script_span=self.span(script),
            timeout_span=self.span(duration) if duration is not None else None,
        )

    def _once(self, node: Tree[Token], words: dict[str, str]) -> dict[str, Tree[Token]]:
        """The option subtrees of `node` by kind; a kind given twice is reported at its second place."""
        seen: dict[str, Tree[Token]] = {}
        for child in _subtrees(node):
            kind = str(child.data)
            if kind in seen:
                first = self.span(seen[kind])
                self.diagnostics.append(
                    Diagnostic(
                        self.span(child),
                        f"{words[kind]} is given twice; the first is at column {first.col}",
                        hint="keep one of them",
                    )
                )
                continue
            seen[kind] = child
        return seen


# Clauses and actions by grammar rule; a new clause or action is one entry here and one method above.
_PARTS: dict[str, Callable[[_Builder, Tree[Token]], Clause | Action]] = {
    "require_role": _Builder.require_role,
    "notify": _Builder.notify,
    "run": _Builder.run,
}


def _subtrees(node: Tree[Token]) -> Iterator[Tree[Token]]:
    return (child for child in node.children if isinstance(child, Tree))


def _token(node: Tree[Token], kind: str) -> Token:
    return next(child for child in node.children if isinstance(child, Token) and child.type == kind)
