"""What Enter on a row opens: the record in full, on a screen of its own that Escape (or Enter, or q) closes.

An event shows its trace (the rules that ran on it with each state and what they did, and for every other rule of
its kind the clause it failed); a run shows its event's trace; a task its whole output; an audit entry every field;
an alert where it stands (acknowledged, muted, each escalation step: to whom, when, how many times), then its
latest event's trace. The texts are built here from client records (`engine.client.snapshots`).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from engine.client.snapshots import AlertView, AuditView, EventTrace, RuleEntry, RuleTrace, TaskDetail
from tui.tables import clock


def trace_text(trace: EventTrace) -> str:
    event = trace.event
    lines = [f"Event {event.id}", f"  {event.kind} from {event.source} at {clock(event.time)}",
             f"  {event.summary}", "", "Fields:"]
    lines += [f"  {key} = {value}" for key, value in trace.fields.items()]
    ran = [rule for rule in trace.rules if rule.matched]
    lines += ["", f"Rules that ran ({len(ran)}):" if ran else "No rule ran on it."]
    for rule in ran:
        lines.append(f"  {_named(rule)}  run {rule.run_id}")
        lines += [f"    {clock(step.time)}  {step.state:<16} {step.detail}".rstrip() for step in rule.steps]
        lines += [f"    did: {effect}" for effect in rule.effects]
    others = [rule for rule in trace.rules if not rule.matched]
    if others:
        lines += ["", f"Rules of this kind that did not match ({len(others)}):"]
        lines += [f"  {_named(rule)}: fails `{rule.failed_clause}`" for rule in others]
    return "\n".join(lines)


def _named(rule: RuleTrace) -> str:
    """An unnamed rule's name is where it is written: say it once."""
    return rule.rule if rule.rule == rule.location else f"{rule.rule}  ({rule.location})"


def task_text(detail: TaskDetail) -> str:
    task = detail.task
    lines = [f"Task {task.task_id}", f"  {task.command}  →  {task.script} {' '.join(task.args)}".rstrip(),
             f"  status {task.status}" + ("" if task.exit_code is None else f", exit code {task.exit_code}")
             + ("" if task.attempts == 1 else f", attempt {task.attempt} of {task.attempts}"),
             f"  created {clock(task.create_time)} from {task.platform}"]
    if detail.earlier:
        lines += ["", "Earlier attempts:", *(f"  {line}" for line in detail.earlier)]
    if detail.error:
        lines += ["", "Error:", detail.error]
    lines += ["", "Output:", detail.output or "(none)"]
    return "\n".join(lines)


def audit_text(entry: AuditView) -> str:
    return "\n".join([f"Audit entry {entry.seq}", f"  time    {entry.time}", f"  action  {entry.action}",
                      f"  actor   {entry.actor}", "", entry.summary])


def alert_text(alert: AlertView) -> str:
    """Where an alert stands: its state, who acknowledged or muted it, and every escalation step since it fired."""
    lines = [f"Alert {alert.name or alert.fingerprint}", f"  fingerprint {alert.fingerprint}",
             f"  {alert.status}, {alert.severity or '?'} severity, service {alert.service or '?'}, "
             f"last heard of {clock(alert.time)}"]
    if alert.summary:
        lines.append(f"  {alert.summary}")
    if alert.acknowledged_by:
        lines.append(f"  acknowledged by {alert.acknowledged_by}")
    if alert.muted_until:
        lines.append(f"  muted until {clock(alert.muted_until)}")
    if alert.escalations:
        lines += ["", f"Escalations ({len(alert.escalations)}):"]
        lines += [f"  to {step.target}, last at {clock(step.at)}, " + ("once" if step.times == 1 else
                                                                       f"{step.times} times")
                  for step in alert.escalations]
    else:
        lines += ["", "Not escalated."]
    return "\n".join(lines)


def rule_text(rule: RuleEntry) -> str:
    lines = [f"Rule {rule.name}", f"  written at {rule.location}"]
    if rule.trigger:
        lines.append(f"  trigger {rule.trigger}")
    return "\n".join(lines)


class DetailScreen(ModalScreen[None]):
    """One record in full, scrollable; Escape, Enter or q goes back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Back"),
        Binding("enter", "dismiss", "Back", show=False),
        Binding("q", "dismiss", "Back", show=False),
    ]
    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > VerticalScroll { width: 100%; height: 100%; border: round $accent; padding: 0 1;
                                    background: $surface; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.text, id="detail", markup=False)
        yield Footer()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
