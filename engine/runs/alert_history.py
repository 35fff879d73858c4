"""One alert's history, oldest first: its arrivals from the journal (firing, resolved) and what Herald and people
did about it from the audit (notified where, pressed, muted, escalated, silenced).

Arrivals are not audit entries: the journal already holds each one durably, by fingerprint (engine.core.journal), and
a keyed entry per alert doubled the cost of taking one in. Alerts journaled before that also have `alert.received`
entries in the audit: each arrival shows once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.core.events import AlertData, Event
from engine.core.journal import Journal
from engine.runs.run import who
from engine.security.audit import AuditLog

RECEIVED = "alert.received"


async def alert_history(journal: Journal, audit: AuditLog, fingerprint: str, limit: int = 500) -> list[dict[str, Any]]:
    """The newest `limit` entries of the alert's history, oldest first; empty when Herald never heard of it.
    An arrival has no audit `seq` (None)."""
    entries = [_arrival(event) for event in await journal.arrivals(fingerprint, limit)]
    journaled = {entry["data"]["event"] for entry in entries}
    entries += [entry for entry in await audit.of_alert(fingerprint, limit)  # an older arrival is in both: once
                if entry["action"] != RECEIVED or entry["data"].get("event") not in journaled]
    entries.sort(key=lambda entry: datetime.fromisoformat(entry["time"]))  # stable: an arrival before what followed
    return entries[-limit:]


def _arrival(event: Event) -> dict[str, Any]:
    data = event.data
    assert isinstance(data, AlertData)
    return {"seq": None, "time": event.time.isoformat(timespec="microseconds"), "action": RECEIVED,
            "actor": who(event), "data": {"event": event.id, "alert": data.fingerprint, "name": data.name,
                                          "status": data.status, "severity": data.severity}}
