"""An alert's history on a real SQLite file: its arrivals come from the journal, what was done about it from the audit,
merged in time order; a journal made before arrivals were kept by fingerprint is migrated (its alerts found by
fingerprint), and an arrival that is also an older `alert.received` audit entry shows once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.core import journal
from engine.core.bus import Bus
from engine.core.events import AlertData, Event
from engine.core.journal import Journal
from engine.core.store import Database
from engine.runs.alert_history import alert_history
from engine.runs.stateful import latest_status
from engine.security import audit
from engine.security.audit import AuditLog

OLD_EVENTS = """
CREATE TABLE events (id TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL, time TEXT NOT NULL,
    body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'accepted', handled_time TEXT, graph_version INTEGER);
"""


def _alert(status: str, at: datetime, fingerprint: str = "fp-disk") -> Event:
    return Event(source="alertmanager", time=at, data=AlertData(fingerprint=fingerprint, status=status,
                                                                name="DiskFull", severity="critical"))


async def test_arrivals_and_deeds_are_merged_in_time_order(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open([journal.SCHEMA, journal.migrate, audit.SCHEMA])
    try:
        events, log = Journal(db), AuditLog(db, Bus())
        start = datetime.now(UTC)
        await events.accept([_alert("firing", start), _alert("firing", start, fingerprint="fp-other")])
        await log.append("notification.sent", "system", alert="fp-disk", platform="chat", chat="@alice")
        await events.accept([_alert("resolved", datetime.now(UTC) + timedelta(seconds=1))])

        history = await alert_history(events, log, "fp-disk")

        assert [(e["action"], e["data"].get("status"), e["seq"] is None) for e in history] == [
            ("alert.received", "firing", True), ("notification.sent", None, False),
            ("alert.received", "resolved", True)]
        assert history[0]["actor"] == "alertmanager" and history[0]["data"]["name"] == "DiskFull"
        assert await alert_history(events, log, "fp-none") == []
        assert [e["action"] for e in await alert_history(events, log, "fp-disk", limit=2)] == [
            "notification.sent", "alert.received"]
    finally:
        await db.close()


async def test_an_older_journal_is_migrated_and_each_arrival_shows_once(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open([OLD_EVENTS, audit.SCHEMA])  # a data folder from before: arrivals were journaled and audited
    fired = _alert("firing", datetime.now(UTC))
    await db.write(lambda conn: conn.execute("INSERT INTO events (id, kind, source, time, body) VALUES (?, ?, ?, ?, ?)",
                                             (fired.id, "alert", "alertmanager", fired.time.isoformat(),
                                              fired.model_dump_json())))
    log = AuditLog(db, Bus())
    await log.append("alert.received", "alertmanager", event=fired.id, alert="fp-disk", status="firing")
    await log.append("alert.received", "alertmanager", event="01OLDERTHANTHEJOURNAL00000", alert="fp-disk",
                     status="firing")
    await db.close()

    db = Database(tmp_path)
    await db.open([journal.SCHEMA, journal.migrate, audit.SCHEMA])
    try:
        events, log = Journal(db), AuditLog(db, Bus())
        assert await db.call(latest_status, "fp-disk") == "firing"  # the older alert is found by its fingerprint
        await events.accept([_alert("resolved", datetime.now(UTC) + timedelta(seconds=1))])
        assert await db.call(latest_status, "fp-disk") == "resolved"

        history = await alert_history(events, log, "fp-disk")
        assert [(e["action"], e["data"]["status"], e["seq"] is None) for e in history] == [
            ("alert.received", "firing", True),  # journaled and audited: shown once, from the journal
            ("alert.received", "firing", False),  # only in the audit: still shown
            ("alert.received", "resolved", True)]
        assert history[0]["data"]["event"] == fired.id
    finally:
        await db.close()


async def test_a_journal_given_the_column_but_not_its_values_is_filled_in_at_the_next_start(tmp_path: Path) -> None:
    """Builds of 2026-12-07 added `events.alert` without filling it in for the alerts already journaled."""
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open([OLD_EVENTS, "ALTER TABLE events ADD COLUMN alert TEXT;"])
    fired = _alert("firing", datetime.now(UTC))
    await db.write(lambda conn: conn.execute("INSERT INTO events (id, kind, source, time, body) VALUES (?, ?, ?, ?, ?)",
                                             (fired.id, "alert", "alertmanager", fired.time.isoformat(),
                                              fired.model_dump_json())))
    await db.close()

    db = Database(tmp_path)
    await db.open([journal.SCHEMA, journal.migrate])
    try:
        assert await db.call(latest_status, "fp-disk") == "firing"
        assert [event.id for event in await Journal(db).arrivals("fp-disk", 10)] == [fired.id]
    finally:
        await db.close()
