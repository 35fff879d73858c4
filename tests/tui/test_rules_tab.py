"""Pilot tests for the Rules tab: the running rules, the last reload, and a rejected reload's problems."""

from __future__ import annotations

from textual.widgets import DataTable, Static, TabbedContent

from engine.client.snapshots import DiagnosticView, ReloadView, RuleEntry, RulesView, Snapshot
from engine.client.static import StaticEngineClient
from tui import make_app

LOADED = RulesView(
    version=3,
    rules=[RuleEntry(name="db-critical", location="rules/ops.rules:4"),
           RuleEntry(name="rules/ops.rules:9", location="rules/ops.rules:9")],
    last=ReloadView(status="reloaded", time="2026-11-27T17:40:05+00:00", trigger="watch", version=3,
                    message="rules reloaded: +1 -0 ~2 =117", diff="+1 -0 ~2 =117"),
)
REJECTED = LOADED.model_copy(update={"last": ReloadView(
    status="rejected", time="2026-11-27T17:41:00+00:00", trigger="api", version=3,
    message="rules rejected: 2 errors; still running version 3",
    diagnostics=[DiagnosticView(path="rules/ops.rules", line=12, col=24, message="expected a duration [like 10m]"),
                 DiagnosticView(path="rules/web.rules", line=3, col=10, message="unknown team 'opz'")])})


async def test_rules_tab_lists_the_running_rules_and_the_last_reload() -> None:
    client = StaticEngineClient([Snapshot(rules=LOADED)])
    app = make_app(client)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("5")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "rules"
        table = app.query_one("#rules-table", DataTable)
        assert [list(map(str, table.get_row_at(i))) for i in range(table.row_count)] == [
            ["db-critical", "", "running", "rules/ops.rules:4"],
            ["rules/ops.rules:9", "", "running", "rules/ops.rules:9"]]
        status = str(app.query_one("#rules-status", Static).content)
        assert "version 3" in status and "2 rules" in status and "+1 -0 ~2 =117" in status
        assert not app.query_one("#rules-problems", Static).display


async def test_a_rejected_reload_shows_each_problem_as_file_line_col_and_a_good_one_clears_them() -> None:
    client = StaticEngineClient([Snapshot(rules=LOADED)])
    app = make_app(client)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("5")
        client.push(REJECTED)
        await pilot.pause()
        problems = app.query_one("#rules-problems", Static)
        assert problems.display
        assert str(problems.content).splitlines() == [
            "rules/ops.rules:12:24: expected a duration [like 10m]", "rules/web.rules:3:10: unknown team 'opz'"]
        status = app.query_one("#rules-status", Static)
        assert "still running version 3" in str(status.content) and status.has_class("-error")
        assert app.query_one("#rules-table", DataTable).row_count == 2

        client.push(LOADED.model_copy(update={"version": 4, "rules": LOADED.rules[:1]}))
        await pilot.pause()
        assert not problems.display and not status.has_class("-error")
        assert app.query_one("#rules-table", DataTable).row_count == 1
