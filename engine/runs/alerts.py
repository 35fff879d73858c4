"""Alert-side state: the buttons sent with notifications, acknowledgements, unacknowledgements and mutes (silences),
and the escalation policies an acknowledgement stopped (so an unacknowledgement can resume them).

A button is bound on the server to a signed value (engine.security.keys: an HMAC covers the rule, event, action,
argument, alert and expiry) and reaches platforms only as a short random handle (16 characters; Telegram carries at
most 64 bytes, Discord 100). A press names the handle; the binding behind it is verified, so an unknown handle, an
altered binding or an expired one is refused. A rule's button and Confirm work once (a replay is refused). The
alert-state buttons (`TOGGLES`: Acknowledge, Unacknowledge, Mute) are not used up: an alert can be acknowledged
again after an unacknowledgement, so the same message's Acknowledge must work again. What they do is idempotent
("already acknowledged by alice"), and every press still passes every check (signature, expiry, the person's roles,
whether the notification was sent to them), so replaying one does nothing the presser may not do anyway.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.errors import AuthError
from engine.core.store import Database
from engine.delivery.outlets import AlertStatus, Button, Escalated
from engine.security import keys

BUTTON_TTL_S = 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS button_handles (
    handle TEXT PRIMARY KEY,
    binding TEXT NOT NULL,
    expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint TEXT PRIMARY KEY,
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    muted_until TEXT,
    muted_by TEXT,
    unacknowledged_by TEXT,
    unacknowledged_at TEXT
);
CREATE TABLE IF NOT EXISTS alert_escalations (
    fingerprint TEXT NOT NULL,
    target TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_escalations_alert ON alert_escalations(fingerprint);
CREATE TABLE IF NOT EXISTS escalation_paused (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS escalation_paused_alert ON escalation_paused(fingerprint);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Give a store made before mutes could come from Alertmanager its `muted_in` column (None: muted in Herald),
    one made before unacknowledgements its two columns, and one made before `mute until resolved` its `mute_ends`
    ("resolved": the resolve ends the mute; None: its time does)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(alert_state)")}
    for column in ("muted_in", "unacknowledged_by", "unacknowledged_at", "mute_ends"):
        if column not in have:
            conn.execute(f"ALTER TABLE alert_state ADD COLUMN {column} TEXT")


ALERT_BUTTONS = (("Acknowledge", "ack", None), ("Mute 1h", "mute", "1h"))
# Buttons that set the alert's state: not used up by a press (see above); which show depends on the state.
TOGGLES = frozenset({"ack", "unack", "mute"})
_LABELS = {"ack": "Acknowledge", "unack": "Unacknowledge"}


def button_label(action: str, arg: str | None) -> str:
    """What a button says: `ack` -> Acknowledge, `mute 1h` -> Mute 1h, `retry` -> Retry."""
    label = _LABELS.get(action, action.replace("-", " ").replace("_", " ").capitalize())
    return f"{label} {arg}" if arg else label
DEFAULT_SPECS: tuple[tuple[str, str | None], ...] = tuple((action, arg) for _, action, arg in ALERT_BUTTONS)


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
        self._muted: dict[str, datetime] = {}  # fingerprint -> until; the table is the record, this the cache

    async def make_buttons(
        self, *, event_id: str, rule: str, fingerprint: str | None,
        specs: tuple[tuple[str, str | None], ...] = DEFAULT_SPECS,
    ) -> tuple[Button, ...]:
        """Sign one button per (action, arg) for this notification; an Acknowledge comes with its Unacknowledge
        (hidden until the alert is acknowledged: engine.delivery.render.shown_buttons)."""
        expires = int(time.time()) + BUTTON_TTL_S
        if fingerprint is not None and any(a == "ack" for a, _ in specs) and not any(a == "unack" for a, _ in specs):
            at = next(i for i, (a, _) in enumerate(specs) if a == "ack") + 1
            specs = (*specs[:at], ("unack", None), *specs[at:])

        def _sign(conn: sqlite3.Connection) -> tuple[Button, ...]:
            buttons = []
            for action, arg in specs:
                handle = secrets.token_urlsafe(12)
                binding = keys.sign_value(conn, {"r": rule, "e": event_id, "a": action, "g": arg, "f": fingerprint,
                                                 "x": expires, "n": handle})
                conn.execute("INSERT INTO button_handles (handle, binding, expires) VALUES (?, ?, ?)",
                             (handle, binding, expires))
                buttons.append(Button(id=handle, label=button_label(action, arg), action=action, arg=arg))
            return tuple(buttons)

        return await self._db.write(_sign)

    def prune_buttons(self) -> None:
        """Forget button handles past their expiry (a press of one would be refused as expired anyway)."""
        now = int(time.time())
        self._db.write_soon(lambda conn: conn.execute("DELETE FROM button_handles WHERE expires < ?", (now,)))

    async def inspect(self, handle: str) -> ButtonBinding:
        """What a pressed button is bound to, verified but not used up (so a press that is then refused leaves it
        for the people allowed to press it); AuthError (unknown, altered, expired, already used) otherwise."""
        return await self._db.call(_binding, handle, False)

    async def redeem(self, handle: str) -> ButtonBinding:
        """Verify a pressed button and use it up; AuthError (unknown, altered, expired, replayed) otherwise."""
        return await self._db.write(_binding, handle, True)

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

        return await self._db.write(_ack)

    async def unacknowledge(self, fingerprint: str, by: str) -> str | None:
        """Return an acknowledged alert to open; return who had acknowledged it (None: it was not, nothing done)."""

        def _unack(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT acknowledged_by FROM alert_state WHERE fingerprint = ?",
                               (fingerprint,)).fetchone()
            if row is None or not row["acknowledged_by"]:
                return None
            conn.execute("UPDATE alert_state SET acknowledged_by = NULL, acknowledged_at = NULL, "
                         "unacknowledged_by = ?, unacknowledged_at = ? WHERE fingerprint = ?",
                         (by, datetime.now(UTC).isoformat(), fingerprint))
            return str(row["acknowledged_by"])

        return await self._db.write(_unack)

    async def pause_escalation(self, key: str, fingerprint: str, payload: dict[str, Any]) -> None:
        """Keep an escalation policy an acknowledgement stopped (its timer's key and payload, at the step it
        stopped), for an unacknowledgement to resume; a resolve forgets it."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        await self._db.write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO escalation_paused (key, fingerprint, payload) VALUES (?, ?, ?)",
            (key, fingerprint, body)))

    async def take_paused(self, fingerprint: str) -> list[tuple[str, dict[str, Any]]]:
        """The escalation policies an acknowledgement stopped for this alert, removed (resuming them is the
        caller's)."""

        def _take(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
            rows = conn.execute("SELECT key, payload FROM escalation_paused WHERE fingerprint = ? ORDER BY rowid",
                                (fingerprint,)).fetchall()
            conn.execute("DELETE FROM escalation_paused WHERE fingerprint = ?", (fingerprint,))
            return [(str(row["key"]), json.loads(row["payload"])) for row in rows]

        return await self._db.write(_take)

    async def mute(self, fingerprint: str, by: str, duration: timedelta, *, until_resolved: bool = False) -> datetime:
        """Mute the alert for `duration`; `until_resolved`: the alert's resolve ends it (`duration` is the most it
        lasts, for a source that never says the alert resolved), and its messages say "until resolved"."""
        return await self.mute_until(fingerprint, by, datetime.now(UTC) + duration,
                                     ends="resolved" if until_resolved else None)

    async def mute_until(self, fingerprint: str, by: str, until: datetime, *, muted_in: str | None = None,
                         ends: str | None = None) -> datetime:
        """Mute the alert until `until`; `muted_in` names where the silence lives when it is not Herald's own
        ("Alertmanager": a silence made there, which Herald follows)."""
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT INTO alert_state (fingerprint, muted_until, muted_by, muted_in, mute_ends) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE SET muted_until = excluded.muted_until, "
                "muted_by = excluded.muted_by, muted_in = excluded.muted_in, mute_ends = excluded.mute_ends",
                (fingerprint, until.isoformat(), by, muted_in, ends),
            )
        )
        self._muted[fingerprint] = until
        return until

    async def unmute(self, fingerprint: str) -> None:
        """The silence ended before its time (expired in Alertmanager): the alert is heard again."""
        self._muted.pop(fingerprint, None)
        await self._db.write(lambda conn: conn.execute(
            "UPDATE alert_state SET muted_until = NULL, muted_by = NULL, muted_in = NULL, mute_ends = NULL "
            "WHERE fingerprint = ?",
            (fingerprint,)))

    async def load(self) -> None:
        """Read the mutes into memory: every notification asks, so the answer must not cost a database trip."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT fingerprint, muted_until FROM alert_state WHERE muted_until IS NOT NULL").fetchall())
        self._muted = {row["fingerprint"]: datetime.fromisoformat(row["muted_until"]) for row in rows}

    async def muted_until(self, fingerprint: str) -> datetime | None:
        until = self._muted.get(fingerprint)
        return until if until is not None and until > datetime.now(UTC) else None

    async def escalated(self, fingerprint: str, target: str, at: datetime) -> None:
        """Record that an escalation step notified `target` (its messages then say so)."""
        await self._db.write(lambda conn: conn.execute(
            "INSERT INTO alert_escalations (fingerprint, target, at) VALUES (?, ?, ?)",
            (fingerprint, target, at.isoformat())))

    async def status(self, fingerprint: str) -> AlertStatus:
        """Who acknowledged and muted the alert, and until when, and whom it was escalated to (as its messages show
        it)."""
        row, steps = await self._db.call(_status_rows, fingerprint)
        escalations = tuple(Escalated(s["target"], datetime.fromisoformat(s["at"]), int(s["times"])) for s in steps)
        if row is None:
            return AlertStatus(escalations=escalations)
        until = _when(row["muted_until"])
        muted = until is not None and until > datetime.now(UTC)
        return AlertStatus(acknowledged_by=row["acknowledged_by"], acknowledged_at=_when(row["acknowledged_at"]),
                           unacknowledged_by=row["unacknowledged_by"],
                           unacknowledged_at=_when(row["unacknowledged_at"]),
                           muted_by=row["muted_by"] if muted else None, muted_until=until if muted else None,
                           muted_in=row["muted_in"] if muted else None,
                           muted_until_resolved=muted and row["mute_ends"] == "resolved", escalations=escalations)

    async def resolved(self, fingerprint: str) -> AlertStatus:
        """A resolved alert forgets its acknowledgement, mute and stopped escalations, so the next firing is news
        again; returns what it was up to then."""
        last = await self.status(fingerprint)
        self._muted.pop(fingerprint, None)
        await self._db.write(_forget, fingerprint)
        return last


def _status_rows(conn: sqlite3.Connection, fingerprint: str) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
    row = conn.execute("SELECT * FROM alert_state WHERE fingerprint = ?", (fingerprint,)).fetchone()
    steps = conn.execute("SELECT target, max(at) AS at, count(*) AS times FROM alert_escalations "
                         "WHERE fingerprint = ? GROUP BY target ORDER BY min(rowid)", (fingerprint,)).fetchall()
    return row, steps


def _forget(conn: sqlite3.Connection, fingerprint: str) -> None:
    conn.execute("DELETE FROM alert_state WHERE fingerprint = ?", (fingerprint,))
    conn.execute("DELETE FROM alert_escalations WHERE fingerprint = ?", (fingerprint,))
    conn.execute("DELETE FROM escalation_paused WHERE fingerprint = ?", (fingerprint,))


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _binding(conn: sqlite3.Connection, handle: str, spend: bool) -> ButtonBinding:
    """The verified binding behind a button's handle; with `spend`, also mark it used (in the same transaction)."""
    row = conn.execute("SELECT binding FROM button_handles WHERE handle = ?", (handle[:64],)).fetchone()
    if row is None:
        raise AuthError("unknown button")
    payload = keys.open_value(conn, row["binding"])
    try:
        binding = ButtonBinding(str(payload["n"]), str(payload["e"]), str(payload["r"]), str(payload["a"]),
                                payload["g"], payload["f"])
        expires = int(payload["x"])
    except (KeyError, TypeError, ValueError):
        raise AuthError("malformed button") from None
    if expires < time.time():
        raise AuthError("this button has expired")
    if binding.id != handle:
        raise AuthError("altered button")
    used = f"button:{binding.id}"
    if not spend:
        if conn.execute("SELECT 1 FROM used_tokens WHERE jti = ?", (used,)).fetchone():
            raise AuthError("this button was already pressed")
        return binding
    try:
        keys.consume(conn, used, expires)
    except AuthError:
        raise AuthError("this button was already pressed") from None
    return binding
