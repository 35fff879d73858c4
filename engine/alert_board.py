"""The operators' board of alerts: the latest state of each recent alert, published to observers (the TUI's Alerts tab).

It follows alert events, the buttons sent with their notifications, and the acknowledgements and mutes that presses
make, and publishes an `AlertView` whenever one of those changes an alert. It is a view, not a record: the journal
and the `alert_state` table are the record, and the board keeps only the `BOARD_CAP` alerts heard of most recently,
so a flood of distinct alerts cannot grow it without bound. Buttons are single use; once one of an action has been
pressed (here or in any chat) the board stops offering that action for the alert's latest notification.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from engine.bus import Bus
from engine.events import AlertData, Event
from engine.outlets import Button
from engine.snapshots import AlertView, ButtonView

BOARD_CAP = 500  # alerts kept on the board; the TUI shows as many rows per table


@dataclass(slots=True)
class _Alert:
    fingerprint: str
    status: str
    time: str
    name: str
    severity: str
    service: str
    summary: str
    event_id: str
    acknowledged_by: str | None = None
    muted_until: str | None = None
    buttons: tuple[Button, ...] = ()

    def view(self) -> AlertView:
        return AlertView(fingerprint=self.fingerprint, status=self.status,  # type: ignore[arg-type]
                         time=self.time, name=self.name, severity=self.severity, service=self.service,
                         summary=self.summary, event_id=self.event_id, acknowledged_by=self.acknowledged_by,
                         muted_until=self.muted_until,
                         buttons=[ButtonView(id=b.id, label=b.label, action=b.action, arg=b.arg)
                                  for b in self.buttons])


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
        earlier = self._alerts.pop(data.fingerprint, None)
        alert = _Alert(data.fingerprint, data.status, event.time.isoformat(), data.name or "", data.severity or "",
                       data.service or "", data.summary or "", event.id)
        if earlier is not None and data.status == "firing":
            alert.acknowledged_by, alert.muted_until, alert.buttons = (earlier.acknowledged_by, earlier.muted_until,
                                                                       earlier.buttons)
        self._alerts[data.fingerprint] = alert
        while len(self._alerts) > self._cap:
            self._alerts.popitem(last=False)
        self._publish(alert)

    def offered(self, fingerprint: str, buttons: tuple[Button, ...]) -> None:
        """A notification about the alert went out with these buttons: they replace the earlier ones."""
        alert = self._alerts.get(fingerprint)
        if alert is not None and buttons:
            alert.buttons = buttons
            self._publish(alert)

    def pressed(self, fingerprint: str, action: str, *, acknowledged_by: str | None = None,
                muted_until: datetime | None = None) -> None:
        """A button of `action` was pressed for the alert (each works once), with what the press did."""
        alert = self._alerts.get(fingerprint)
        if alert is None:
            return
        alert.buttons = tuple(b for b in alert.buttons if b.action != action)
        if acknowledged_by is not None:
            alert.acknowledged_by = acknowledged_by
        if muted_until is not None:
            alert.muted_until = muted_until.isoformat(timespec="minutes")
        self._publish(alert)

    def _publish(self, alert: _Alert) -> None:
        # Built only when an observer looks: with nobody watching, a busy engine pays nothing per alert for it.
        self._bus.publish_lazy(AlertView, alert.fingerprint, functools.partial(alert.view))
