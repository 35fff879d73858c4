"""The rule language's syntax tree: frozen dataclasses, each node with the `Span` it came from.

The parser builds these from lark's tree and nothing else; the checks and the compiler read them. Keeping the
AST free of lark types means checks, formatter and compiler never depend on how the text was parsed.

Besides `span` (the whole construct), a node keeps the span of each name it holds (`team_span`, `role_span`,
...) so that a message about an unknown name points at the name, not at the whole line. They default to None
so tests and tools can build nodes by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Span:
    """Where a node sits in its file: 1-based line and column; `end_col` is one past the last character."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def location(self) -> str:
        """`PATH:LINE`, the form used to name unnamed rules and to point at another rule in a message."""
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class AlertTrigger:
    """`on alert [firing|resolved] [severity WORD] [from WORD]`; status defaults to "firing"."""

    status: str
    severity: str | None
    service: str | None
    span: Span
    severity_span: Span | None = None


@dataclass(frozen=True, slots=True)
class CommandTrigger:
    """`on command NAME`."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class RequireRole:
    """`require role NAME`: the caller must hold this role (checked by the engine before anything runs)."""

    role: str
    span: Span
    role_span: Span | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """`notify TEAM [with buttons]`."""

    team: str
    buttons: bool
    span: Span
    team_span: Span | None = None


@dataclass(frozen=True, slots=True)
class RunScript:
    """`run SCRIPT [sandboxed] [timeout DURATION]`; `run` is always sandboxed, the word only says so."""

    script: str
    sandboxed: bool
    timeout_s: float | None
    span: Span
    script_span: Span | None = None
    timeout_span: Span | None = None


Trigger: TypeAlias = AlertTrigger | CommandTrigger
Clause: TypeAlias = RequireRole
Action: TypeAlias = Notify | RunScript


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: a trigger, clauses that guard it, and the actions it takes, in the order written."""

    name: str | None
    trigger: Trigger
    clauses: tuple[Clause, ...]
    actions: tuple[Action, ...]
    span: Span
    name_span: Span | None = None


@dataclass(frozen=True, slots=True)
class RuleFile:
    """The rules of one file, in file order."""

    path: str
    rules: tuple[Rule, ...]
