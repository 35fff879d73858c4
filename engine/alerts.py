"""Alert-side state: the buttons sent with notifications, acknowledgements and mutes (silences).

A button id is an unguessable random token bound server-side to (event, rule, action, arg, alert): a press only
names the id, so a client cannot alter what the button does. (Signed, expiring buttons come with the security work.)
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.outlets import Button
from engine.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS buttons (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    arg TEXT,
    fingerprint TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint TEXT PRIMARY KEY,
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    muted_until TEXT,
    muted_by TEXT
);
"""

ALERT_BUTTONS = (("Acknowledge", "ack", None), ("Mute 1h", "mute", "1h"))
MUTE_DURATIONS = {"1h": timedelta(hours=1)}


@dataclass(frozen=True)
class ButtonBinding:
    id: str
    event_id: str
    rule: str
    action: str
    arg: str | None
    fingerprint: str | None


class AlertState:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def make_buttons(self, *, event_id: str, rule: str, fingerprint: str | None) -> tuple[Button, ...]:
        now = datetime.now(UTC).isoformat()
        buttons = tuple(
            Button(id=secrets.token_urlsafe(16), label=label, action=action, arg=arg)
            for label, action, arg in ALERT_BUTTONS
        )
        rows = [(b.id, event_id, rule, b.action, b.arg, fingerprint, now) for b in buttons]
        await self._db.call(
            lambda conn: conn.executemany(
                "INSERT INTO buttons (id, event_id, rule, action, arg, fingerprint, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        )
        return buttons

    async def binding(self, button_id: str) -> ButtonBinding | None:
        row = await self._db.call(
            lambda conn: conn.execute("SELECT * FROM buttons WHERE id = ?", (button_id,)).fetchone()
        )
        if row is None:
            return None
        return ButtonBinding(row["id"], row["event_id"], row["rule"], row["action"], row["arg"], row["fingerprint"])

    async def acknowledge(self, fingerprint: str, by: str) -> str | None:
        """Record an acknowledgement; return who had already acknowledged it, if anyone."""

        def _ack(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT acknowledged_by FROM alert_state WHERE fingerprint = ?",
                               (fingerprint,)).fetchone()
            if row and row["acknowledged_by"]:
                return str(row["acknowledged_by"])
            conn.execute(
                "INSERT INTO alert_state (fingerprint, acknowledged_by, acknowledged_at) VALUES (?, ?, ?) "
                "ON CONFLICT(fingerprint) DO UPDATE SET acknowledged_by = excluded.acknowledged_by, "
                "acknowledged_at = excluded.acknowledged_at",
                (fingerprint, by, datetime.now(UTC).isoformat()),
            )
            return None

        return await self._db.call(_ack)

    async def mute(self, fingerprint: str, by: str, duration: timedelta) -> datetime:
        until = datetime.now(UTC) + duration
        await self._db.call(
            lambda conn: conn.execute(
                "INSERT INTO alert_state (fingerprint, muted_until, muted_by) VALUES (?, ?, ?) "
                "ON CONFLICT(fingerprint) DO UPDATE SET muted_until = excluded.muted_until, "
                "muted_by = excluded.muted_by",
                (fingerprint, until.isoformat(), by),
            )
        )
        return until

    async def muted_until(self, fingerprint: str) -> datetime | None:
        row = await self._db.call(
            lambda conn: conn.execute("SELECT muted_until FROM alert_state WHERE fingerprint = ?",
                                      (fingerprint,)).fetchone()
        )
        if row is None or row["muted_until"] is None:
            return None
        until = datetime.fromisoformat(row["muted_until"])
        return until if until > datetime.now(UTC) else None

    async def resolved(self, fingerprint: str) -> None:
        """A resolved alert forgets its acknowledgement and mute, so the next firing is news again."""
        await self._db.call(
            lambda conn: conn.execute("DELETE FROM alert_state WHERE fingerprint = ?", (fingerprint,))
        )
