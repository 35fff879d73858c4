"""Pilot tests for the console's usability (issue 20 item 7): Enter opens a row's detail, every tab works at 80x24,
focus returns to the table after a command, `/` types one slash, `?` lists the keys, the Rules tab shows each
rule's trigger and status and a broken file's source line with a caret."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent
from textual.widgets._footer import FooterKey

from engine.client.snapshots import (
    AlertView,
    ButtonView,
    DiagnosticView,
    EventTrace,
    ReloadView,
    RuleEntry,
    RulesView,
    RuleTrace,
    TaskDetail,
    TraceStep,
)
from engine.client.static import StaticEngineClient
from tests.tui.test_app import EVENT, RUN, SNAPSHOT, TASK
from tui import make_app
from tui.app import VIEWS, HeraldApp

TRACE = EventTrace(event=EVENT, fields={"alert.severity": "critical", "alert.service": "database"}, rules=[
    RuleTrace(rule="disk-full", location="rules/ops.rules:4", matched=True, run_id=RUN.run_id,
              steps=[TraceStep(state="INIT", time=RUN.time), TraceStep(state="REPORT_RESULT", time=RUN.time,
                                                                       detail="notified ops")],
              effects=["notify to chat:#ops (sent)"]),
    RuleTrace(rule="web-down", location="rules/web.rules:2", matched=False, failed_clause="service web")])
DETAIL = TaskDetail(task=TASK, output="line 1\nline 2\nbackup ok\n")
RULES = RulesView(
    version=2,
    rules=[RuleEntry(name="db-critical", location="rules/ops.rules:4",
                     trigger="on alert from database severity critical firing")],
    last=ReloadView(status="rejected", time="2026-11-27T17:41:00+00:00", trigger="watch", version=2,
                    message="rules rejected: 1 error; still running version 2",
                    diagnostics=[DiagnosticView(path="rules/web.rules", line=3, col=10,
                                                message="unknown team 'opz'",
                                                source="   on alert notify opz\n                   ^^^")]),
)
ALERT = AlertView(fingerprint="f1", status="firing", time=EVENT.time, name="DiskFullOnTheBiggestVolume",
                  severity="critical", service="database-replica-eu-west", summary="/var is 97% full",
                  event_id=EVENT.id, acknowledged_by="alice", muted_until="2025-11-27T18:40:05+00:00",
                  buttons=[ButtonView(id="b1", label="Unmute", action="unmute")])
FULL = SNAPSHOT.model_copy(update={"rules": RULES, "alerts": [ALERT]})


def client() -> StaticEngineClient:
    return StaticEngineClient([FULL], traces={EVENT.id: TRACE}, tasks={TASK.task_id: DETAIL},
                              reply=lambda text: f"ok: {text}")


def detail_text(app: HeraldApp) -> str:
    return str(app.screen.query_one("#detail", Static).content)


@pytest.mark.parametrize(("key", "expected"), [
    ("1", ["Rules that ran (1):", "disk-full  (rules/ops.rules:4)", "REPORT_RESULT    notified ops",
           "did: notify to chat:#ops (sent)", "web-down  (rules/web.rules:2): fails `service web`"]),
    ("2", ["Rules that ran (1):", "did: notify to chat:#ops (sent)"]),  # a run shows its event's trace
    ("3", ["Task 01JTASK00000000000000000T1", "Output:\nline 1\nline 2\nbackup ok"]),
    ("4", ["Audit entry 7", "actor   alice", "backup.sh now"]),
    ("5", ["Rule db-critical", "trigger on alert from database severity critical firing"]),
])
async def test_enter_on_a_row_opens_its_detail_and_escape_closes_it(key: str, expected: list[str]) -> None:
    app = make_app(client())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(key, "enter")
        await pilot.pause()
        text = detail_text(app)
        for part in expected:
            assert part in text
        await pilot.press("escape")
        assert app.query_one(f"#{VIEWS[int(key) - 1]}-table", DataTable).has_focus


async def test_at_80x24_every_tab_shows_its_key_columns_and_the_footer_its_keys() -> None:
    app = make_app(client())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        needed = {"events": "summary", "runs": "state", "tasks": "status", "audit": "action", "rules": "status",
                  "alerts": "state"}
        for n, view in enumerate(VIEWS, start=1):
            await pilot.press(str(n))
            await pilot.pause()
            table = app.query_one(f"#{view}-table", DataTable)
            assert table.row_count >= 1, view
            assert table.region.height >= 5, view  # rows to read, not a sliver
            left = 0
            for key, column in table.columns.items():
                if key.value == needed[view]:
                    break
                left += column.get_render_width(table)
            assert left + 4 <= table.region.width, f"{view}: {needed[view]} starts off screen at {left}"
            keys = {footer_key.key_display or footer_key.key: footer_key for footer_key in app.query(FooterKey)}
            for shown in ("q", "/", "?"):
                assert shown in keys and keys[shown].region.right <= 80, (view, shown, sorted(keys))


async def test_after_a_command_focus_returns_to_the_table() -> None:
    app = make_app(client())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3", "slash", *"backup now", "enter")
        await pilot.pause()
        assert app.query_one("#tasks-table", DataTable).has_focus
        await pilot.press("down")  # the table has the keys again
        assert app.query_one("#command", Input).value == ""


@pytest.mark.parametrize("before", [[], ["3"], ["escape"], ["slash", "escape"], ["tab"]])
async def test_slash_starts_a_command_with_one_slash(before: list[str]) -> None:
    stub = client()
    app = make_app(stub)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press(*before)
        await pilot.press("slash", *"help", "enter")
        await pilot.pause()
        assert stub.sent == ["/help"]


async def test_question_mark_lists_the_keys() -> None:
    app = make_app(client())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = detail_text(app)
        for line in ("1-6", "enter", "/", "q", "c", "a", "m", "escape"):
            assert any(row.split()[0] == line for row in text.splitlines() if row.strip()), line
        await pilot.press("escape")
        assert app.query_one(TabbedContent).active == "events"


async def test_rules_tab_shows_trigger_status_and_a_broken_files_source_line_and_caret() -> None:
    app = make_app(client())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("5")
        await pilot.pause()
        table = app.query_one("#rules-table", DataTable)
        row = [str(cell) for cell in table.get_row_at(0)]
        assert row[:3] == ["db-critical", "on alert from database severity critical firing", "running"]
        problems = str(app.query_one("#rules-problems", Static).content).splitlines()
        assert problems == ["rules/web.rules:3:10: unknown team 'opz'", "   on alert notify opz",
                            "                   ^^^"]
