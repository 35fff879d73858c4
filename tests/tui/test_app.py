"""Pilot tests for the console: what an operator sees in each table, the header, and the command line."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from engine.client.snapshots import AuditView, EventView, RunView, Snapshot, TaskView
from engine.client.static import StaticEngineClient
from tui import make_app
from tui.app import HeraldApp

EVENT = EventView(
    id="01JEVENT0000000000000000E1",
    kind="alert",
    source="webhook/grafana",
    time="2025-11-27T17:40:05+00:00",
    summary="disk /var 91% on db-1",
)
RUN = RunView(
    run_id="01JRUN000000000000000000R1",
    event_id=EVENT.id,
    rule="disk-full",
    state="running",
    time="2025-11-27T17:40:06+00:00",
)
TASK = TaskView(
    task_id="01JTASK00000000000000000T1",
    platform="chat",
    command="/backup now",
    script="backup.sh",
    args=["now"],
    status="running",
    create_time="2025-11-27T17:40:07+00:00",
)
AUDIT = AuditView(
    seq=7, time="2025-11-27T17:40:07+00:00", action="task.start", actor="alice", summary="backup.sh now"
)
SNAPSHOT = Snapshot(events=[EVENT], runs=[RUN], tasks=[TASK], audit=[AUDIT])


def table(app: HeraldApp, view: str) -> DataTable:
    return app.query_one(f"#{view}-table", DataTable)


def header_text(app: HeraldApp) -> str:
    return str(app.query_one("#header", Static).content)


def reply_text(app: HeraldApp) -> str:
    return str(app.query_one("#reply", Static).content)


async def test_snapshot_rows_appear_in_every_table() -> None:
    app = make_app(StaticEngineClient([SNAPSHOT]))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        events, runs, tasks, audit = (table(app, v) for v in ("events", "runs", "tasks", "audit"))
        assert events.row_count == 1
        assert events.get_row(EVENT.id) == [
            "11-27 17:40:05",
            "alert",
            "webhook/grafana",
            "disk /var 91% on db-1",
        ]
        assert runs.get_row(RUN.run_id) == ["11-27 17:40:06", "disk-full", "running", "000000E1", ""]
        assert tasks.get_row(TASK.task_id) == [
            TASK.task_id[-8:],
            "/backup now",
            "backup.sh",
            "running",
            "",
            "",
        ]
        assert audit.get_row("7") == ["7", "11-27 17:40:07", "task.start", "alice", "backup.sh now"]


async def test_task_update_replaces_its_row() -> None:
    client = StaticEngineClient([SNAPSHOT])
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        tasks = table(app, "tasks")
        assert tasks.get_row(TASK.task_id)[3] == "running"

        done = TASK.model_copy(
            update={"status": "succeeded", "exit_code": 0, "output_tail": "dumping\nbackup ok\n"}
        )
        client.push(done)
        await pilot.pause()

        assert tasks.row_count == 1
        assert tasks.get_row(TASK.task_id)[3:] == ["succeeded", "0", "backup ok"]

        # A rule that retries: the status says which attempt of how many, and why the last one failed.
        waiting = TASK.model_copy(update={"status": "pending", "attempt": 2, "attempts": 3,
                                          "output_tail": "backup.sh failed (exit code 1)"})
        client.push(waiting)
        await pilot.pause()
        assert tasks.get_row(TASK.task_id)[3:] == ["pending (2/3)", "", "backup.sh failed (exit code 1)"]


async def test_live_items_append_and_a_new_snapshot_replaces_everything() -> None:
    client = StaticEngineClient([SNAPSHOT])
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        second = EVENT.model_copy(update={"id": "01JEVENT0000000000000000E2", "summary": "db-1 recovered"})
        client.push(second)
        client.push(RUN.model_copy(update={"state": "done"}))
        await pilot.pause()
        events = table(app, "events")
        assert events.row_count == 2
        assert events.get_row_index(second.id) == 1  # newest at the bottom
        assert table(app, "runs").get_row(RUN.run_id)[2] == "done"

        client.push(Snapshot(events=[second]))  # what a reconnect delivers
        await pilot.pause()
        assert events.row_count == 1 and events.get_row(second.id)[3] == "db-1 recovered"
        assert table(app, "tasks").row_count == 0


async def test_event_table_is_capped_dropping_the_oldest() -> None:
    many = [EVENT.model_copy(update={"id": f"E{i:04d}"}) for i in range(510)]
    client = StaticEngineClient([Snapshot(events=many[:500]), *many[500:]])
    app = make_app(client)
    async with app.run_test() as pilot:
        await pilot.pause()
        events = table(app, "events")
        assert events.row_count == 500
        assert "E0009" not in events.rows and "E0010" in events.rows and "E0509" in events.rows


@pytest.mark.parametrize("how", ["slash key", "click"])
async def test_command_is_sent_and_its_reply_shown(how: str) -> None:
    client = StaticEngineClient([SNAPSHOT], reply=lambda text: f"backup started for {text!r}")
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        if how == "slash key":
            await pilot.press("slash")  # focuses the input and starts the command with '/'
            await pilot.press(*"backup now", "enter")
        else:
            await pilot.click("#command")
            await pilot.press(*"/backup now", "enter")
        await pilot.pause()
        assert client.sent == ["/backup now"]
        assert reply_text(app) == "backup started for '/backup now'"
        assert app.query_one("#command", Input).value == ""


async def test_header_shows_the_client_status() -> None:
    client = StaticEngineClient([SNAPSHOT], status="connected")
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert "engine: connected" in header_text(app)
        client.status = "disconnected, retrying in 2.0s: connection refused"
        await pilot.pause(0.4)  # the header polls the client's status
        assert "engine: disconnected, retrying in 2.0s: connection refused" in header_text(app)


async def test_number_keys_switch_views_and_q_quits() -> None:
    client = StaticEngineClient([SNAPSHOT])
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "events"
        await pilot.press("3")
        assert tabs.active == "tasks"
        assert app.focused is table(app, "tasks")
        await pilot.press("4")
        assert tabs.active == "audit"
        await pilot.press("q")
        await pilot.pause()
    assert client.closed  # the app closes its client on exit


async def test_c_on_the_tasks_table_cancels_the_task_under_the_cursor() -> None:
    client = StaticEngineClient([SNAPSHOT])
    app = make_app(client)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("3")  # the Tasks view, its table focused
        await pilot.press("c")
        await pilot.pause()
        assert client.sent == [f"/cancel {TASK.task_id}"]
