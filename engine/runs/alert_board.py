"""The operators' board of alerts: the latest state of each recent alert, published to observers (the TUI's Alerts tab).

It follows alert events, the buttons sent with their notifications, and the acknowledgements and mutes that presses
make, and publishes an `AlertView` whenever one of those changes an alert. It is a view, not a record: the journal
and the `alert_state` table are the record, and the board keeps only the `BOARD_CAP` alerts heard of most recently,
so a flood of distinct alerts cannot grow it without bound. A rule's button is single use: once one of an action
has been pressed (here or in any chat) the board stops offering that action for the alert's latest notification.
The alert-state buttons (Acknowledge, Unacknowledge, Mute) are kept and shown while they apply, as in the messages.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from engine.client.snapshots import AlertView, ButtonView, EscalationView
from engine.core.bus import Bus
from engine.core.events import AlertData, Event
from engine.delivery.outlets import Button, Escalated
from engine.delivery.render import hidden_actions
from engine.runs.alerts import TOGGLES

BOARD_CAP = 500  # alerts kept on the board; the TUI shows as many rows per table


@dataclass(slots=True)
class _Alert:
    data: AlertData  # of the latest event about it (frozen: safe to keep)
    time: datetime
    event_id: str
    acknowledged_by: str | None = None
    muted_until: str | None = None
    buttons: tuple[Button, ...] = ()
    source: str = ""  # where the alert came from ("alertmanager", "grafana", ...)
    escalations: tuple[Escalated, ...] = ()


def _view(fingerprint: str, status: Literal["firing", "resolved"], name: str | None, severity: str | None,
          service: str | None, summary: str | None, time: datetime, event_id: str, acknowledged_by: str | None,
          muted_until: str | None, buttons: tuple[Button, ...], escalations: tuple[Escalated, ...]) -> AlertView:
    hidden = hidden_actions(acknowledged=bool(acknowledged_by), muted=muted_until is not None)
    return AlertView(fingerprint=fingerprint, status=status, time=time.isoformat(), name=name or "",
                     severity=severity or "", service=service or "", summary=summary or "", event_id=event_id,
                     acknowledged_by=acknowledged_by, muted_until=muted_until,
                     buttons=[ButtonView(id=b.id, label=b.label, action=b.action, arg=b.arg)
                              for b in buttons if b.action not in hidden],
                     escalations=[EscalationView(target=s.target, at=s.at.isoformat(), times=s.times)
                                  for s in escalations])


class AlertBoard:
    def __init__(self, bus: Bus, cap: int = BOARD_CAP) -> None:
        self._bus = bus
        self._cap = cap
        self._alerts: OrderedDict[str, _Alert] = OrderedDict()

    def seen(self, event: Event) -> None:
        """An alert event was accepted: a firing keeps who acknowledged or muted it and its unpressed buttons
        (the engine still honours them); a resolve forgets both, as the alert state does."""
        data = event.data
        if not isinstance(data, AlertData):
            return
        alerts = self._alerts
        alert = alerts.get(data.fingerprint)
        if alert is None:  # the common case in a storm of distinct alerts: one small record, views built later
            alert = alerts[data.fingerprint] = _Alert(data, event.time, event.id, source=event.source)
            if len(alerts) > self._cap:
                alerts.popitem(last=False)
        else:
            alerts.move_to_end(data.fingerprint)
            alert.data, alert.time, alert.event_id, alert.source = data, event.time, event.id, event.source
            if data.status == "resolved":
                alert.acknowledged_by = alert.muted_until = None
                alert.buttons = alert.escalations = ()
        self._publish(alert)

    def offered(self, fingerprint: str, buttons: tuple[Button, ...]) -> None:
        """A notification about the alert went out with these buttons: they replace the earlier ones."""
        alert = self._alerts.get(fingerprint)
        if alert is not None and buttons:
            alert.buttons = buttons
            self._publish(alert)

    def pressed(self, fingerprint: str, action: str, *, acknowledged_by: str | None = None,
                muted_until: datetime | None = None, unacknowledged: bool = False) -> None:
        """A button of `action` was pressed for the alert, with what the press did: a rule's button works once, an
        alert-state button stays (and shows while it applies)."""
        alert = self._alerts.get(fingerprint)
        if alert is None:
            return
        if action not in TOGGLES:
            alert.buttons = tuple(b for b in alert.buttons if b.action != action)
        if unacknowledged:
            alert.acknowledged_by = None
        if acknowledged_by is not None:
            alert.acknowledged_by = acknowledged_by
        if muted_until is not None:
            alert.muted_until = muted_until.isoformat(timespec="minutes")
        self._publish(alert)

    def escalated(self, fingerprint: str, steps: tuple[Escalated, ...]) -> None:
        """An escalation step notified someone: the alert's steps as they stand now (whom, when, how often)."""
        alert = self._alerts.get(fingerprint)
        if alert is not None:
            alert.escalations = steps
            self._publish(alert)

    def firing(self) -> list[str]:
        return [fingerprint for fingerprint, alert in self._alerts.items() if alert.data.status == "firing"]

    def firing_alerts(self) -> list[AlertData]:
        """Every alert firing now, from any source (what a Herald silence by labels may cover)."""
        return [alert.data for alert in self._alerts.values() if alert.data.status == "firing"]

    def firing_from(self, source: str) -> list[AlertData]:
        """The alerts from `source` that are firing now (what an Alertmanager silence may cover)."""
        return [alert.data for alert in self._alerts.values()
                if alert.data.status == "firing" and alert.source == source]

    def muted(self, fingerprint: str, until: datetime | None) -> None:
        """A silence began, changed or ended outside a press (Alertmanager's own)."""
        alert = self._alerts.get(fingerprint)
        if alert is not None:
            alert.muted_until = until.isoformat(timespec="minutes") if until else None
            self._publish(alert)

    def restore(self, fingerprint: str, *, acknowledged_by: str | None, muted_until: datetime | None,
                buttons: tuple[Button, ...], escalations: tuple[Escalated, ...] = ()) -> None:
        """After a restart: who acknowledged or muted the alert and whom it was escalated to (the alert state) and
        the buttons of its latest notification (the outbox; the view shows those that apply), so the board is what
        it was before the stop."""
        alert = self._alerts.get(fingerprint)
        if alert is None:
            return
        alert.acknowledged_by = acknowledged_by
        alert.muted_until = muted_until.isoformat(timespec="minutes") if muted_until else None
        alert.buttons = buttons
        alert.escalations = escalations
        self._publish(alert)

    def _publish(self, alert: _Alert) -> None:
        # Built only when an observer looks: with nobody watching, a busy engine pays nothing per alert for it. The
        # bus keeps the newest 5,000 alerts' views (engine.core.bus.KEEP_ALERTS), the board only its 500: so the view
        # is made from what it shows, not the alert's whole data (labels, annotations), which is then let go.
        data = alert.data
        self._bus.publish_lazy(AlertView, data.fingerprint, functools.partial(
            _view, data.fingerprint, data.status, data.name, data.severity, data.service, data.summary, alert.time,
            alert.event_id, alert.acknowledged_by, alert.muted_until, alert.buttons, alert.escalations))
