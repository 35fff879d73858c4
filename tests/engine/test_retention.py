"""History past `keep_history_days` is forgotten, on a real SQLite file with the engine's schemas: handled events with
their trace rows, claimed effects and finished tasks go, in chunks; an event not yet handled, or that a group still
runs on from, keeps itself and everything newer; an unfinished or unreported task stays; the audit log is untouched."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.core.bus import Bus
from engine.core.config import Config
from engine.core.events import AlertData, Event
from engine.core.ids import derived_id
from engine.core.journal import Journal
from engine.core.store import Database
from engine.security.audit import AuditLog
from engine.server.app import SCHEMAS
from engine.server.retention import forget_history

NOW = datetime.now(UTC)
RULE = "rules/all.rules:1"


def _alert(n: int, days_ago: float) -> Event:
    """An alert received `days_ago`: its id starts with that time, as a live event's id does with its own."""
    at = NOW - timedelta(days=days_ago, seconds=n)
    return Event(id=derived_id(at, "alert", str(n)), source="alertmanager", time=at,
                 data=AlertData(fingerprint=f"fp-{n}", status="firing", name="DiskFull", severity="critical"))


async def _journal(db: Database, events: list[Event], *, handled: bool, task_status: str = "succeeded",
                   unreported: int = 0) -> None:
    """Journal `events` with what a run leaves: two trace rows, one claimed effect and one task each."""
    await Journal(db).accept(events)

    def runs(conn: sqlite3.Connection) -> None:
        for event in events:
            run_id = derived_id(event.time, "run", event.id, RULE)
            task_id = derived_id(event.time, "task", run_id, "0")
            conn.executemany("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)",
                             [(run_id, state, event.time.isoformat(), event.id, RULE, "")
                              for state in ("EXECUTE", "REPORT_RESULT")])
            conn.execute("INSERT INTO effects (key, time) VALUES (?, datetime('now'))", (f"{run_id}/1",))
            conn.execute("INSERT INTO tasks (task_id, status, create_time, body, unreported) VALUES (?, ?, ?, ?, ?)",
                         (task_id, task_status, event.time.isoformat(), json.dumps({"run_id": run_id}), unreported))
            if handled:
                conn.execute("UPDATE events SET status = 'handled' WHERE id = ?", (event.id,))

    await db.write(runs)


async def _left(db: Database) -> dict[str, set[str]]:
    def read(conn: sqlite3.Connection) -> dict[str, set[str]]:
        return {"events": {row[0] for row in conn.execute("SELECT id FROM events")},
                "run_trace": {row[0] for row in conn.execute("SELECT DISTINCT event_id FROM run_trace")},
                "effects": {row[0] for row in conn.execute("SELECT key FROM effects")},
                "tasks": {row[0] for row in conn.execute("SELECT task_id FROM tasks")}}
    return await db.call(read)


async def test_handled_history_past_its_keep_is_forgotten_in_chunks_and_the_rest_stays(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open(SCHEMAS)
    try:
        audit = AuditLog(db, Bus())
        await audit.append("notification.sent", "system", alert="fp-0", platform="chat", chat="@alice")
        old = [_alert(n, days_ago=40) for n in range(25)]
        await _journal(db, old, handled=True)
        running = [_alert(100, days_ago=40)]
        await _journal(db, running, handled=True, task_status="running")
        unreported = [_alert(101, days_ago=40)]
        await _journal(db, unreported, handled=True, unreported=1)
        recent = [_alert(n, days_ago=1) for n in range(200, 205)]
        await _journal(db, recent, handled=True)
        before = await _left(db)

        gone = await forget_history(db, 30, chunk=7)  # 25+ rows per table: several chunks each

        left = await _left(db)
        kept_events = {e.id for e in recent}
        assert left["events"] == left["run_trace"] == kept_events
        assert gone == {"events": 27, "run_trace": 54, "effects": 27,
                        "tasks": 25}, gone  # the running and the unreported task stay
        assert len(left["effects"]) == len(recent) and len(left["tasks"]) == len(recent) + 2
        assert len(before["tasks"]) - len(left["tasks"]) == 25
        assert [entry["action"] for entry in await audit.of_alert("fp-0")] == ["notification.sent"]
        assert await forget_history(db, 30) == dict.fromkeys(gone, 0)  # nothing left to forget
        assert await forget_history(db, 0) == {"events": 5, "run_trace": 10, "effects": 5, "tasks": 5}
    finally:
        await db.close()


async def test_an_event_still_needed_keeps_everything_from_its_time_on(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open(SCHEMAS)
    try:
        older = [_alert(1, days_ago=50)]
        await _journal(db, older, handled=True)
        waiting = [_alert(2, days_ago=45)]  # accepted, its runs not all handed off: a restart replays it
        await _journal(db, waiting, handled=False)
        after = [_alert(3, days_ago=40)]
        await _journal(db, after, handled=True)

        gone = await forget_history(db, 30)

        left = await _left(db)
        assert gone == {"events": 1, "run_trace": 2, "effects": 1, "tasks": 1}
        assert left["events"] == left["run_trace"] == {waiting[0].id, after[0].id}
        assert len(left["effects"]) == 2  # the replay of `waiting` finds what its runs claimed

        await db.write(lambda conn: conn.execute("UPDATE events SET status = 'handled' WHERE id = ?",
                                                 (waiting[0].id,)))
        grouped = [_alert(4, days_ago=42)]  # handled, the first of a group whose window is still open
        await _journal(db, grouped, handled=True)
        await db.write(lambda conn: conn.execute(
            "INSERT INTO group_state (rule, clause, value, batch, event_id, fields, stage, count, due) "
            "VALUES (?, 'group', 'db', 'batch-1', ?, '{}', 0, 3, 0)", (RULE, grouped[0].id)))

        assert (await forget_history(db, 30))["events"] == 1  # `waiting`, now handled; the group's event stays
        assert (await _left(db))["events"] == {grouped[0].id, after[0].id}
    finally:
        await db.close()


def test_history_is_kept_30_days_unless_configured() -> None:
    assert Config().keep_history_days == 30
    assert Config.model_validate({"keep_history_days": 0}).keep_history_days == 0
