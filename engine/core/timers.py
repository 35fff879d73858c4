"""Persisted timers: escalations, confirmation expiry, group windows, schedules, silence ends (issue 8).

A timer is a row (kind, due time in UTC, key, JSON payload) in the `timers` table. `Timers.run` is the loop that
takes due timers in order of their due time and hands each to the handler registered for its kind. Taking a timer
deletes its row and records it in `timers_fired` in one transaction, before the handler runs: a timer fires at
most once, even across a crash or restart, and a timer whose moment passed while Herald was down fires once on
start. (A crash between taking a timer and its handler finishing loses that one effect; handlers that raise events
hand them to the journal, which is durable from there on.)

Keys name what a timer is about, so rescheduling replaces and cancelling needs no id: `state_key("escalate", rule,
clause_fingerprint, alert_fingerprint)`. Time comes from an injectable `Clock`, so tests move time instead of
sleeping; after moving a `ManualClock`, `poke()` the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from engine.core.store import Database

log = logging.getLogger("herald.timers")

SCHEMA = """
CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    due REAL NOT NULL,          -- UTC, seconds since the epoch
    key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due ON timers(due, id);
CREATE TABLE IF NOT EXISTS timers_fired (
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    due REAL NOT NULL,
    fired REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_fired_key ON timers_fired(key);
"""

MAX_SLEEP_S = 1.0  # the loop looks again at least this often, so a moved clock is noticed without a poke
BATCH = 100
FIRED_KEPT_S = 7 * 24 * 3600
_SEP = "\x1f"  # rule names may hold ':' and '/', so key parts are joined with a character no name contains


def state_key(*parts: object) -> str:
    """One key from its parts; `state_key(a, b) + SEP` is a prefix of every key that starts with parts a, b."""
    return _SEP.join(str(p) for p in parts)


def key_prefix(*parts: object) -> str:
    return state_key(*parts) + _SEP


def key_parts(key: str) -> list[str]:
    return key.split(_SEP)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock tests set and move by hand."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Timer:
    kind: str
    due: datetime
    key: str
    payload: dict[str, Any]


TimerHandler = Callable[[Timer], Awaitable[None]]


def _row_timer(row: sqlite3.Row) -> Timer:
    return Timer(row["kind"], datetime.fromtimestamp(row["due"], UTC), row["key"], json.loads(row["payload"]))


class Timers:
    """The timer table and the loop that fires it; handlers register per kind (`on` returns the detach)."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self._db = db
        self.clock: Clock = clock or SystemClock()
        self._handlers: dict[str, TimerHandler] = {}
        self._wake = asyncio.Event()

    def on(self, kind: str, handler: TimerHandler) -> Callable[[], None]:
        if kind in self._handlers:
            raise ValueError(f"a handler for timers of kind {kind!r} is already registered")
        self._handlers[kind] = handler

        def detach() -> None:
            self._handlers.pop(kind, None)

        return detach

    async def schedule(self, kind: str, due: datetime, key: str, payload: dict[str, Any], *,
                       replace: bool = True) -> bool:
        """Persist a timer; with `replace` an existing timer of the same key is replaced, else kept.
        Returns whether this call's timer is the one now stored."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"

        def _insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(f"{verb} INTO timers (kind, due, key, payload) VALUES (?, ?, ?, ?)",
                                  (kind, due.timestamp(), key, body))
            return cursor.rowcount > 0

        stored = await self._db.write(_insert)
        self.poke()
        return stored

    async def cancel(self, key: str) -> bool:
        cursor = await self._db.write(lambda conn: conn.execute("DELETE FROM timers WHERE key = ?", (key,)))
        return bool(cursor.rowcount)

    async def cancel_prefix(self, prefix: str) -> int:
        cursor = await self._db.write(
            lambda conn: conn.execute("DELETE FROM timers WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)))
        return int(cursor.rowcount)

    async def pending(self, prefix: str = "") -> list[Timer]:
        """Timers not yet fired whose key starts with `prefix`, soonest first."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT kind, due, key, payload FROM timers WHERE substr(key, 1, ?) = ? ORDER BY due, id",
            (len(prefix), prefix)).fetchall())
        return [_row_timer(row) for row in rows]

    async def fired(self, key: str) -> list[datetime]:
        """When the timer `key` fired (each firing's due time), oldest first: for tests and the audit trail."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT due FROM timers_fired WHERE key = ? ORDER BY rowid", (key,)).fetchall())
        return [datetime.fromtimestamp(row["due"], UTC) for row in rows]

    def poke(self) -> None:
        """Make the loop look at the table now (a timer was added, or a test moved the clock)."""
        self._wake.set()

    async def run(self, *, grace_s: float = 0.0) -> None:
        """Fire due timers, soonest first, until cancelled. `grace_s`: when timers are already overdue (they came due
        while Herald was down), wait this long first (real seconds), so the people they notify can reconnect."""
        if grace_s > 0:
            now = self.clock.now().timestamp()
            overdue = await self._db.call(lambda conn: conn.execute(
                "SELECT count(*) FROM timers WHERE due <= ?", (now,)).fetchone()[0])
            if overdue:
                log.info("%d timers came due while Herald was down: they fire in %gs, once clients reconnected",
                         overdue, grace_s)
                await asyncio.sleep(grace_s)
        while True:
            self._wake.clear()
            now = self.clock.now().timestamp()
            taken = await self._db.write(self._take_due, now)
            for timer in taken:
                await self._fire(timer)
            if len(taken) == BATCH:
                continue
            next_due = await self._db.call(
                lambda conn: conn.execute("SELECT min(due) FROM timers").fetchone()[0])
            delay = MAX_SLEEP_S if next_due is None else min(MAX_SLEEP_S, max(0.0, next_due - now))
            if delay > 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as
                # the timeout expires, and this loop would then wait forever while the engine stops.
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    @staticmethod
    def _take_due(conn: sqlite3.Connection, now: float) -> list[Timer]:
        rows = conn.execute("SELECT id, kind, due, key, payload FROM timers WHERE due <= ? ORDER BY due, id LIMIT ?",
                            (now, BATCH)).fetchall()
        if not rows:
            return []
        conn.executemany("DELETE FROM timers WHERE id = ?", [(row["id"],) for row in rows])
        fired_at = time.time()
        conn.executemany("INSERT INTO timers_fired (key, kind, due, fired) VALUES (?, ?, ?, ?)",
                         [(row["key"], row["kind"], row["due"], fired_at) for row in rows])
        # Rows go in in the order they fired, so the first one inside the week bounds the old ones: this reads only
        # what it deletes (a plain `fired < ?` scanned the whole week at every firing).
        conn.execute("DELETE FROM timers_fired WHERE rowid < (SELECT rowid FROM timers_fired WHERE fired >= ? "
                     "ORDER BY rowid LIMIT 1)", (fired_at - FIRED_KEPT_S,))
        return [_row_timer(row) for row in rows]

    async def _fire(self, timer: Timer) -> None:
        handler = self._handlers.get(timer.kind)
        if handler is None:
            log.warning("timer %r of kind %s fired with no handler registered; dropped", timer.key, timer.kind)
            return
        try:
            await handler(timer)
        except Exception:
            log.exception("timer %r (%s) failed", timer.key, timer.kind)
