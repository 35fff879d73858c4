"""The event journal: an accepted event is committed to SQLite before its sender hears "accepted".

Events are stored whole (JSON) with a status: `accepted` until every rule run it started has been handed off, then
`handled`. On start, events still `accepted` are replayed. Events that carry a secret are settled by the intake inside
the journal's transaction and stored without it (engine/intake/secrets.py).

The journal is also the record of what arrived: an alert's row carries its fingerprint (`alert`), so its arrivals
(firing, resolved) are found by fingerprint without a second, audited copy of each (`arrivals`). The audit keeps
what Herald and people did about it (engine.security.audit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from engine.core.events import AlertData, Event
from engine.core.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    time TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'accepted',
    handled_time TEXT,
    graph_version INTEGER,  -- the rules version that handled it (hot reload swaps versions)
    alert TEXT  -- an alert's fingerprint
);
CREATE INDEX IF NOT EXISTS events_status ON events(status) WHERE status = 'accepted';
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Give a journal made before it recorded arrivals by fingerprint its `alert` column, filled in for the alerts it
    holds (once: a scan of the journal), and index it, so an alert's latest state is found without a scan."""
    if "alert" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}:
        conn.execute("ALTER TABLE events ADD COLUMN alert TEXT")
    # Builds of 2026-12-07 added the column without filling it in. Rows journaled before a build kept it are older
    # than all rows after, so the oldest alert says whether a fill is due: one row read at each start.
    oldest = conn.execute("SELECT alert FROM events WHERE kind = 'alert' ORDER BY id LIMIT 1").fetchone()
    if oldest is not None and oldest[0] is None:
        conn.execute("UPDATE events SET alert = json_extract(body, '$.data.fingerprint') "
                     "WHERE kind = 'alert' AND alert IS NULL")
    conn.execute("CREATE INDEX IF NOT EXISTS events_alert ON events(alert, id) WHERE alert IS NOT NULL")


class Intake(Protocol):
    """Work some events need done inside the transaction that journals them (engine.intake.secrets)."""

    def needs(self, event: Event) -> bool: ...

    def settle(self, conn: sqlite3.Connection, event: Event) -> Event:
        """Do the work; return the event to journal (and handle) in place of `event`."""
        ...


_INSERT = "INSERT OR IGNORE INTO events (id, kind, source, time, body, alert) VALUES (?, ?, ?, ?, ?, ?)"


def _row(e: Event) -> tuple[str, str, str, str, str, str | None]:
    return (e.id, e.kind, e.source, e.time.isoformat(), e.model_dump_json(),
            e.data.fingerprint if isinstance(e.data, AlertData) else None)


class Journal:
    def __init__(self, db: Database, intake: Intake | None = None) -> None:
        self._db = db
        self._intake = intake

    async def accept(self, events: Sequence[Event]) -> list[tuple[Event, str]]:
        """Commit all of `events` together (all or none), durably; concurrent accepts share one commit.

        Returns the events that are new, each with its body as journaled (JSON): an event whose id is already
        journaled (a derived event raised again by a replay after a crash) is not stored or dispatched twice. An
        event the intake settles is journaled (and returned) as settled, never as it came."""
        intake = self._intake
        settling = [intake is not None and intake.needs(e) for e in events]
        rows = [None if settle else _row(e) for e, settle in zip(events, settling, strict=True)]

        def _insert(conn: sqlite3.Connection) -> list[tuple[Event, str] | None]:
            journaled: list[tuple[Event, str] | None] = []
            for event, row in zip(events, rows, strict=True):
                if row is None:  # settled here, so a retry of the whole transaction settles it again
                    assert intake is not None
                    if conn.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone():
                        journaled.append(None)
                        continue
                    event = intake.settle(conn, event)
                    row = _row(event)
                new = conn.execute(_INSERT, row).rowcount == 1
                journaled.append((event, row[4]) if new else None)
            return journaled

        return [item for item in await self._db.write(_insert) if item is not None]

    def mark_handled(self, event_id: str, when: str, graph_version: int | None = None) -> None:
        """Record that every rule run of the event was handed off. It rides along with the next commit instead of
        waiting for one: losing it in a crash means the event is replayed on start."""
        self._db.defer_row("UPDATE events SET status = 'handled', handled_time = ?, graph_version = ? WHERE id = ?",
                           (when, graph_version, event_id))

    async def unfinished(self) -> list[tuple[Event, str]]:
        """Events accepted but not yet handled, oldest first (replayed on start), each with its journaled body."""
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM events WHERE status = 'accepted' ORDER BY id").fetchall()
        )
        return [(Event.model_validate_json(row["body"]), row["body"]) for row in rows]

    async def arrivals(self, fingerprint: str, limit: int) -> list[Event]:
        """The newest `limit` arrivals of one alert (each firing or resolved notice journaled), oldest first."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM events WHERE alert = ? ORDER BY id DESC LIMIT ?", (fingerprint, limit)).fetchall())
        return [Event.model_validate_json(row["body"]) for row in reversed(rows)]

    async def recent(self, limit: int) -> list[Event]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [Event.model_validate_json(row["body"]) for row in reversed(rows)]
