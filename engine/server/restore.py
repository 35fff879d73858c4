"""What a freshly started engine shows before anything new happens: the recent events, alerts (with who
acknowledged or muted them and the buttons still good), runs with their final states, tasks and audit entries, read
from the durable store and published on the bus, so a TUI or stream client started after a restart sees them."""

from __future__ import annotations

from engine.core.bus import Bus
from engine.core.journal import Journal
from engine.core.store import Database
from engine.delivery.outbox import Outbox
from engine.delivery.outlets import Button
from engine.delivery.render import all_buttons
from engine.runs import runtime
from engine.runs.alert_board import AlertBoard
from engine.runs.alerts import AlertState
from engine.runs.run import event_view
from engine.security.audit import AuditLog
from engine.tasks.queue import TaskQueue


async def publish_recent(bus: Bus, board: AlertBoard, *, journal: Journal, alerts: AlertState, outbox: Outbox,
                         db: Database, tasks: TaskQueue, audit: AuditLog, limit: int) -> None:
    for event in await journal.recent(limit):
        bus.publish(event_view(event))
        board.seen(event)  # alerts as last heard of
    for fingerprint in board.firing():  # ... with who acknowledged or muted them, and their buttons still good
        status = await alerts.status(fingerprint)
        sent = await outbox.notifications_of_alert(fingerprint, limit=1)
        buttons = all_buttons(sent[-1].message) if sent else ()  # the board shows those that apply
        board.restore(fingerprint, acknowledged_by=status.acknowledged_by, muted_until=status.muted_until,
                      escalations=status.escalations,
                      buttons=tuple(Button(id=b.handle, label=b.label, action=b.action, arg=b.arg) for b in buttons))
    for run in await db.call(runtime.recent_runs, limit):  # with their final states
        bus.publish(run)
    for task in await tasks.recent(limit):
        bus.publish(task.view())
    for entry in await audit.recent(limit):
        bus.publish(entry)
