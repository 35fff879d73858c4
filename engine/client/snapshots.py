"""Plain snapshot records the engine publishes to observers (the TUI, `/api/v1/stream`).

Observers hold these, never engine objects. Each carries only what a view shows; all are JSON-safe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _View(BaseModel):
    # Validators are built on first use (pydantic's defer_build): an engine no client streams from never builds
    # most of these views.
    model_config = ConfigDict(frozen=True, defer_build=True)


class EventView(_View):
    id: str
    kind: str
    source: str
    time: str
    summary: str


class RunView(_View):
    run_id: str
    event_id: str
    rule: str
    state: str
    time: str
    detail: str = ""


class TaskView(_View):
    task_id: str
    platform: str
    command: str
    script: str
    args: list[str]
    status: Literal["pending", "running", "succeeded", "failed", "timed_out", "cancelled"]
    create_time: str
    exit_code: int | None = None
    output_tail: str = ""
    attempt: int = 1
    attempts: int = 1


class ButtonView(_View):
    """A button offered with an alert's notification: `id` is the signed value a press sends back (single use)."""

    id: str
    label: str
    action: str
    arg: str | None = None


class EscalationView(_View):
    """An escalation step of an alert: whom it notified, the latest time (ISO 8601), and how often (repeats)."""

    target: str
    at: str
    times: int = 1


class AlertView(_View):
    """An alert as an operator sees it: its latest state, who acknowledged or muted it, and the buttons of its
    latest notification that nobody has pressed yet (none once it resolved)."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    time: str  # of the latest event about it
    name: str = ""
    severity: str = ""
    service: str = ""
    summary: str = ""
    event_id: str = ""
    acknowledged_by: str | None = None
    muted_until: str | None = None
    buttons: list[ButtonView] = []
    escalations: list[EscalationView] = []  # since it last fired, in the order the steps first notified


class AuditView(_View):
    seq: int
    time: str
    action: str
    actor: str
    summary: str


class RuleEntry(_View):
    name: str
    location: str  # file:line
    trigger: str = ""  # as written: `on alert severity critical service database`


class DiagnosticView(_View):
    """One problem that stopped a reload; `line`/`col` are 0 when the source does not say (a config value)."""

    path: str
    line: int
    col: int
    message: str
    severity: str = "error"
    source: str = ""  # the source line and a caret line under the problem, when the file could be read

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}:{self.col}" if self.line else self.path

    def __str__(self) -> str:
        label = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.where}: {label}{self.message}"


class ReloadView(_View):
    """The outcome of one reload: `loaded` (at start), `reloaded`, `unchanged` or `rejected` (the running version
    stays; `diagnostics` say why). `version` is the version running afterwards; `diff` reads `+1 -0 ~2 =117`."""

    status: Literal["loaded", "reloaded", "unchanged", "rejected"]
    time: str
    trigger: str
    version: int
    message: str
    diff: str = ""
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    diagnostics: list[DiagnosticView] = []
    needs_restart: list[str] = []


class RulesView(_View):
    """The rules running now (name and file:line, in file order), their version, and the last reload's outcome."""

    version: int
    rules: list[RuleEntry]
    last: ReloadView


class Snapshot(_View):
    events: list[EventView] = []
    runs: list[RunView] = []
    tasks: list[TaskView] = []
    audit: list[AuditView] = []
    alerts: list[AlertView] = []
    rules: RulesView | None = None


class TraceStep(_View):
    """One state a rule run entered, with what it said there."""

    state: str
    time: str
    detail: str = ""


class RuleTrace(_View):
    """What one rule of the event's kind did with it: ran (its states and the effects done), or did not match
    (`failed_clause`: the first clause of its trigger the event fails, as written)."""

    rule: str
    location: str = ""
    matched: bool
    failed_clause: str = ""
    run_id: str = ""
    steps: list[TraceStep] = []
    effects: list[str] = []


class EventTrace(_View):
    """`GET /api/v1/events/{id}`: an event, the fields rules test, and every rule of its kind with its verdict.
    Rules that no longer exist but ran on it are listed too (from the durable trace)."""

    event: EventView
    fields: dict[str, str] = {}
    rules: list[RuleTrace] = []


class TaskDetail(_View):
    """`GET /api/v1/tasks/{id}`: a task and its whole output (the stream carries only its tail)."""

    task: TaskView
    output: str = ""
    error: str = ""
    earlier: list[str] = []
