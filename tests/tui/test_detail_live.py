"""Enter on a row against a real engine (issue 20 item 7): an event's trace from the engine's store (the rule that
ran with its states and what it sent, and the clause the other rule of its kind failed), a task's whole output,
and the Rules tab's triggers and a broken file's source line with its caret."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from engine.cli.main import main as herald
from engine.client.remote import RemoteEngineClient
from engine.server.app import Engine
from tests.support import http_url
from tests.tui.test_restart import post_alert, rows, text_of, until
from tui import make_app


def detail(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one("#detail", Static).content)


async def test_enter_on_an_alerts_event_shows_its_trace_from_the_engine(engine: Engine, rules_dir: Path) -> None:
    (rules_dir / "web.rules").write_text("on alert severity warning from web notify ops\n")
    await engine.reload()
    app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
    async with app.run_test(size=(120, 40)) as pilot:
        await post_alert(http_url(engine))
        await until(pilot, lambda: any("REPORT_RESULT" in row for row in rows(app, "runs")), "the run")
        events = app.query_one("#events-table", DataTable)
        await pilot.press("1")
        events.move_cursor(row=next(i for i, row in enumerate(rows(app, "events")) if "DiskFull" in row))
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.screen.query("#detail")), "the detail")
        text = detail(app)
        assert "Rules that ran (1):" in text and "ops.rules:5  run " in text
        assert "REPORT_RESULT" in text and "did: notify to chat:#ops" in text
        assert f"  {rules_dir}/web.rules:1: fails `from web`" in text
        assert "alert.service = database" in text


async def test_the_rules_tab_shows_triggers_and_a_broken_files_caret(engine: Engine, rules_dir: Path) -> None:
    app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: any("on alert from database severity critical" in row
                                       for row in rows(app, "rules")), "the triggers")
        (rules_dir / "web.rules").write_text("on alert notify opz\n")
        await engine.reload()
        problems = app.query_one("#rules-problems", Static)
        await until(pilot, lambda: "^^^" in str(problems.content), "the caret")
        lines = str(problems.content).splitlines()
        assert lines[0].startswith(f"{rules_dir}/web.rules:1:17: unknown team 'opz'")
        assert lines[1].strip() == "on alert notify opz" and lines[2].strip().startswith("^")


async def test_enter_on_a_task_shows_its_whole_output(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """alice (an admin, with her own token) runs /backup now in the sandbox; Enter on its task shows every line."""
    assert herald(["token", "issue", "alice", "--config", str(config_file)]) == 0
    app = make_app(RemoteEngineClient(http_url(engine), capsys.readouterr().out.strip()))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "engine: connected" in text_of(app, "#header"), "the connection")
        await pilot.press("3", "slash", *"backup now", "enter")
        await until(pilot, lambda: any("succeeded" in row for row in rows(app, "tasks")), "the finished task",
                    timeout=120)
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.screen.query("#detail")), "the detail")
        text = detail(app)
        assert "status succeeded, exit code 0" in text
        assert "backup (now) started at" in text and "copied backup.sh" in text and "backup finished: 1 files" in text
