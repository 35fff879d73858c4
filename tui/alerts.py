"""The Alerts tab: each recent alert once, with its state (acknowledged, muted, escalated to whom and how often) and
the buttons of its latest notification.

`a` presses the alert's Acknowledge button, `u` its Unacknowledge button and `m` its Mute button, as the operator,
exactly as in chat: the engine checks the button's signature and the rules, and its answer shows on the reply line.
The engine offers only the buttons that apply now (Unacknowledge once the alert is acknowledged, Acknowledge again
after that); when there is none of the key's kind, the key says there is nothing to press.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from engine.client.snapshots import AlertView, ButtonView
from tui.tables import RecordTable, clock


def alert_state(record: AlertView) -> str:
    """What has been done about the alert, in a few words."""
    if record.status == "resolved":
        return "resolved"
    done = []
    if record.acknowledged_by:
        done.append(f"acked by {record.acknowledged_by}")
    if record.muted_until:
        done.append(f"muted until {clock(record.muted_until)}")
    if record.escalations:
        done.append("escalated to " + ", ".join(step.target + (f" ×{step.times}" if step.times > 1 else "")
                                                for step in record.escalations))
    return ", ".join(done) or "open"


class AlertsTable(RecordTable[AlertView]):
    """Alerts by fingerprint; a new event about an alert updates its row in place."""

    COLUMNS = (
        ("time", "Time"),
        ("severity", "Severity"),
        ("service", "Service"),
        ("alert", "Alert"),
        ("state", "State"),
        ("buttons", "Buttons"),
    )
    WIDTHS: ClassVar[dict[str, int]] = {"service": 10, "alert": 20}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "press('ack')", "Acknowledge"),
        Binding("u", "press('unack')", "Unack"),
        Binding("m", "press('mute')", "Mute"),
    ]

    class Press(Message):
        """The operator asked to press `button` (or there was none of `action` to press: `button` is None)."""

        def __init__(self, action: str, button: ButtonView | None, alert: str) -> None:
            super().__init__()
            self.action = action
            self.button = button
            self.alert = alert

    def key_of(self, record: AlertView) -> str:
        return record.fingerprint

    def cells_of(self, record: AlertView) -> tuple[str, ...]:
        title = " — ".join(part for part in (record.name, record.summary) if part) or record.fingerprint
        return (clock(record.time), record.severity or "?", record.service or "?", title, alert_state(record),
                " ".join(f"[{button.label}]" for button in record.buttons))

    def action_press(self, action: str) -> None:
        record = self.current()
        if record is None:
            return
        button = next((b for b in record.buttons if b.action == action), None)
        self.post_message(self.Press(action, button, record.name or record.fingerprint))
