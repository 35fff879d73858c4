"""The Rules tab: the running rules (name, trigger as written, status, where), the version and the last reload, and
when a reload was rejected every problem as file:line:col with its source line and caret."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.widgets import Static, TabPane

from engine.client.snapshots import RuleEntry, RulesView
from tui.tables import ROW_CAP, RecordTable, clock

RULES_CAP = 20_000
"""Rules shown: the whole rule set of any realistic installation."""


class RulesTable(RecordTable[RuleEntry]):
    """The running rules in file order: name, trigger as written, status, and where each is written."""

    COLUMNS = (("name", "Rule"), ("trigger", "Trigger"), ("status", "Status"), ("location", "Where"))
    WIDTHS: ClassVar[dict[str, int]] = {"name": 20, "trigger": 36}

    def __init__(self, *, id: str, cap: int = ROW_CAP) -> None:
        super().__init__(id=id, cap=cap)
        self.statuses: dict[str, str] = {}

    def key_of(self, record: RuleEntry) -> str:
        return record.name

    def cells_of(self, record: RuleEntry) -> tuple[str, ...]:
        return (record.name, record.trigger, self.statuses.get(record.name, "running"), record.location)

    def load(self, records: Iterable[RuleEntry]) -> None:
        """Show a whole rule set at once, the cursor staying at the top (rules are read, not followed)."""
        self.clear()
        self.records.clear()
        for record in list(records)[: self.cap]:
            self.records[self.key_of(record)] = record
            self.add_row(*self.cells_of(record), key=self.key_of(record))


def rule_statuses(view: RulesView) -> dict[str, str]:
    """Each rule's status in a word or two: new or changed by the last reload, or kept from before a rejected one
    when its file is among the broken ones (the rest simply run)."""
    last = view.last
    statuses = {name: "added" for name in last.added} | {name: "changed" for name in last.changed}
    if last.status == "rejected":
        broken = {diag.path for diag in last.diagnostics}
        for rule in view.rules:
            if rule.location.rsplit(":", 1)[0] in broken:
                statuses[rule.name] = "kept (file broken)"
    return statuses


def rules_status(view: RulesView) -> str:
    """One line: the running version, how many rules, and what the last reload did."""
    last = view.last
    when = f"{last.trigger}, {clock(last.time)}"
    return f"version {view.version} · {len(view.rules)} rules · {last.message} ({when})"


def rules_problems(view: RulesView) -> str:
    """Every diagnostic of a rejected reload as `file:line:col: message`, one a line ("" when it was accepted)."""
    if view.last.status != "rejected":
        return ""
    lines = [f"{diag}\n{diag.source}" if diag.source else str(diag) for diag in view.last.diagnostics]
    return "\n".join(lines)


class RulesPane(TabPane):
    """The Rules tab: a status line, the last reload's problems (only when it was rejected), the rules."""

    def __init__(self) -> None:
        super().__init__("Rules", id="rules")
        self.status = Static("no rules yet", id="rules-status", markup=False)
        self.problems = Static("", id="rules-problems", markup=False)
        self.table = RulesTable(id="rules-table", cap=RULES_CAP)

    def compose(self) -> ComposeResult:
        yield self.status
        yield self.problems
        yield self.table

    def show(self, view: RulesView) -> None:
        self.status.update(rules_status(view))
        self.status.set_class(view.last.status == "rejected", "-error")
        self.problems.update(rules_problems(view))
        self.problems.display = view.last.status == "rejected"
        statuses = rule_statuses(view)
        if view.rules != list(self.table.records.values()) or statuses != self.table.statuses:
            self.table.statuses = statuses
            self.table.load(view.rules)
