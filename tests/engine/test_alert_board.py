"""The alert board's views on the bus: each shows the alert as it stood when published, also after the board (which
keeps fewer alerts than the bus) let the alert go; acknowledging hides Acknowledge, and a resolve clears buttons."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.core.bus import Bus
from engine.core.events import AlertData, Event
from engine.delivery.outlets import Button
from engine.runs.alert_board import AlertBoard

ACK, MUTE = Button("h-ack", "Acknowledge", "ack"), Button("h-mute", "Mute 1h", "mute", "1h")


def _alert(fingerprint: str, status: str = "firing") -> Event:
    return Event(source="alertmanager", time=datetime(2026, 12, 7, 9, 0, tzinfo=UTC), data=AlertData(
        fingerprint=fingerprint, status=status, name=f"Disk{fingerprint}", severity="critical", service="db",
        summary="disk full", labels={"instance": "db1", "team": "ops"}))


def _views(bus: Bus) -> dict[str, tuple[str, str, str, list[str], str | None]]:
    return {v.fingerprint: (v.status, v.name, v.summary, [b.label for b in v.buttons], v.acknowledged_by)
            for v in bus.snapshot().alerts}


def test_views_show_each_alert_as_published_also_once_the_board_let_it_go() -> None:
    bus = Bus()
    board = AlertBoard(bus, cap=2)
    for fingerprint in ("a", "b"):
        board.seen(_alert(fingerprint))
        board.offered(fingerprint, (ACK, MUTE))
    board.pressed("a", "ack", acknowledged_by="alice")
    board.seen(_alert("c"))  # the board keeps b and c now; the bus still shows a
    board.seen(_alert("b", "resolved"))

    assert _views(bus) == {
        "a": ("firing", "Diska", "disk full", ["Mute 1h"], "alice"),  # acknowledged: Acknowledge is hidden
        "c": ("firing", "Diskc", "disk full", [], None),
        "b": ("resolved", "Diskb", "disk full", [], None),  # a resolve clears the buttons
    }
    assert [v.fingerprint for v in bus.snapshot().alerts] == ["a", "c", "b"]  # newest last
    board.pressed("a", "mute", muted_until=datetime(2026, 12, 7, 10, 0, tzinfo=UTC))  # not on the board any more
    assert _views(bus)["a"][4] == "alice" and bus.snapshot().alerts[0].muted_until is None
