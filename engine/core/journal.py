"""The event journal: an accepted event is committed to SQLite before its sender hears "accepted".

Events are stored whole (JSON) with a status: `accepted` until every rule run it started has been handed off, then
`handled`. On start, events still `accepted` are replayed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from engine.core.events import Event
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
    graph_version INTEGER  -- the rules version that handled it (hot reload swaps versions)
);
CREATE INDEX IF NOT EXISTS events_status ON events(status) WHERE status = 'accepted';
"""


class Journal:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def accept(self, events: Sequence[Event]) -> list[tuple[Event, str]]:
        """Commit all of `events` together (all or none), durably; concurrent accepts share one commit.

        Returns the events that are new, each with its body as journaled (JSON): an event whose id is already
        journaled (a derived event raised again by a replay after a crash) is not stored or dispatched twice."""
        rows = [(e.id, e.kind, e.source, e.time.isoformat(), e.model_dump_json()) for e in events]

        def _insert(conn: sqlite3.Connection) -> list[bool]:
            return [conn.execute("INSERT OR IGNORE INTO events (id, kind, source, time, body) VALUES (?, ?, ?, ?, ?)",
                                 row).rowcount == 1 for row in rows]

        inserted = await self._db.write(_insert)
        return [(event, row[4]) for event, row, new in zip(events, rows, inserted, strict=True) if new]

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

    async def recent(self, limit: int) -> list[Event]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [Event.model_validate_json(row["body"]) for row in reversed(rows)]
