"""The lookups Herald makes into tables that grow for ever read through an index, so they cost the same in a data
folder of a hundred events as in one of millions: an alert's latest state (escalation steps, silences mirrored to
Alertmanager) and an event's trace (the TUI's trace view, `GET /api/v1/events/ID/trace`). Both run on the event
loop, where a scan of a large journal stalls everything else.

Measured on a real SQLite file in SQLite's virtual-machine instructions (a progress handler), not in time: the cost
with many newer events must stay that with few, where a scan grows a hundredfold."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dsl import EventGraph
from engine.core.events import AlertData, Event
from engine.core.ids import derived_id
from engine.core.journal import Journal
from engine.core.store import Database
from engine.runs.stateful import latest_status
from engine.runs.trace import event_trace
from engine.server.app import SCHEMAS

NEWER = 20_000


def _alert(fingerprint: str, status: str, at: datetime) -> Event:
    return Event(source="alertmanager", time=at, data=AlertData(fingerprint=fingerprint, status=status,
                                                                name="DiskFull", severity="critical"))


def _instructions(conn: sqlite3.Connection, lookup: Callable[[sqlite3.Connection], Any]) -> tuple[int, Any]:
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return 0

    conn.set_progress_handler(count, 1)  # called at every instruction: an exact count
    try:
        result = lookup(conn)
    finally:
        conn.set_progress_handler(None, 1)
    return calls, result


async def _journal_with_runs(db: Database, events: list[Event]) -> None:
    """Journal `events` with what their rule runs leave behind: two trace rows each, and a task for one in ten."""
    await Journal(db).accept(events)

    def runs(conn: sqlite3.Connection) -> None:
        traces, tasks = [], []
        for n, event in enumerate(events):
            run_id = derived_id(event.time, event.id, "rules/all.rules:1")
            traces += [(run_id, state, event.time.isoformat(), event.id, "rules/all.rules:1", "")
                       for state in ("EXECUTE", "REPORT_RESULT")]
            if n % 10 == 0:
                task_id = derived_id(event.time, "task", run_id, "0")
                tasks.append((task_id, event.time.isoformat(), json.dumps({"task_id": task_id, "run_id": run_id})))
        conn.executemany("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)", traces)
        conn.executemany("INSERT INTO tasks (task_id, status, create_time, body) VALUES (?, 'succeeded', ?, ?)", tasks)

    await db.write(runs)


async def test_an_alerts_latest_state_and_an_events_trace_cost_the_same_behind_many_newer_events(
        tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open(SCHEMAS)
    try:
        start = datetime.now(UTC) - timedelta(days=1)
        old = _alert("fp-old", "firing", start)
        await _journal_with_runs(db, [old] + [_alert(f"fp-{n}", "firing", start + timedelta(seconds=1 + n / 1000))
                                              for n in range(100)])

        def lookups(conn: sqlite3.Connection) -> tuple[str | None, Any]:
            return latest_status(conn, "fp-old"), event_trace(conn, old.id, EventGraph([]))

        few, (status, trace) = await db.call(_instructions, lookups)
        assert status == "firing"
        assert trace is not None and [rule.steps[-1].state for rule in trace.rules] == ["REPORT_RESULT"]
        assert any(effect.startswith("task ") and effect.endswith("(succeeded)") for effect in trace.rules[0].effects)

        later = start + timedelta(hours=1)
        await _journal_with_runs(db, [_alert(f"fp-new-{n % 500}", "firing", later + timedelta(milliseconds=n))
                                      for n in range(NEWER)])
        many, (status, trace) = await db.call(_instructions, lookups)
        assert status == "firing" and trace is not None and len(trace.rules[0].effects) == 1

        assert many <= 2 * few, f"{few} instructions with 101 events, {many} with {NEWER} more"
    finally:
        await db.close()
