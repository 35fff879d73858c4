"""The Alerts tab with a canned client: one row per alert, updated in place, and `a` / `u` / `m` press its buttons."""

from __future__ import annotations

from textual.widgets import DataTable, Static, TabbedContent

from engine.client.snapshots import AlertView, ButtonView, Snapshot
from engine.client.static import StaticEngineClient
from tui import make_app

ACK = ButtonView(id="signed-ack", label="Acknowledge", action="ack")
MUTE = ButtonView(id="signed-mute", label="Mute 1h", action="mute", arg="1h")
FIRING = AlertView(fingerprint="fp1", status="firing", time="2026-12-04T10:00:00+00:00", name="DiskFull",
                   severity="critical", service="database", summary="/var is 97% full", buttons=[ACK, MUTE])


def rows(app) -> list[str]:  # type: ignore[no-untyped-def]
    alerts = app.query_one("#alerts-table", DataTable)
    return [" | ".join(str(cell) for cell in alerts.get_row_at(i)) for i in range(alerts.row_count)]


async def test_key_6_shows_alerts_and_a_then_m_press_the_buttons_of_the_row_under_the_cursor() -> None:
    client = StaticEngineClient([Snapshot(alerts=[FIRING])])
    app = make_app(client)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        await pilot.press("6")
        assert app.query_one(TabbedContent).active == "alerts"
        assert rows(app) == ["12-04 10:00:00 | critical | database | DiskFull — /var is 97% full | open | "
                             "[Acknowledge] [Mute 1h]"]
        await pilot.press("a", "m")
        await pilot.pause()
        assert client.pressed == ["signed-ack", "signed-mute"]


async def test_an_update_replaces_the_row_and_a_spent_button_is_not_pressed_again() -> None:
    client = StaticEngineClient([Snapshot(alerts=[FIRING])])
    app = make_app(client)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        client.push(FIRING.model_copy(update={"acknowledged_by": "alice", "buttons": [MUTE]}))
        await pilot.pause()
        assert len(rows(app)) == 1
        assert rows(app)[0].endswith("| acked by alice | [Mute 1h]")
        await pilot.press("6", "a")
        await pilot.pause()
        assert client.pressed == []
        assert "DiskFull: no ack button to press" in str(app.query_one("#reply", Static).render())
        client.push(FIRING.model_copy(update={"status": "resolved", "buttons": []}))
        await pilot.pause()
        assert rows(app)[0].endswith("| resolved | ")




async def test_u_presses_the_unacknowledge_button_of_an_acknowledged_alert() -> None:
    unack = ButtonView(id="signed-unack", label="Unacknowledge", action="unack")
    acked = FIRING.model_copy(update={"acknowledged_by": "alice", "buttons": [unack, MUTE]})
    client = StaticEngineClient([Snapshot(alerts=[acked])])
    app = make_app(client)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        await pilot.press("6")
        assert rows(app)[0].endswith("| acked by alice | [Unacknowledge] [Mute 1h]")
        await pilot.press("u")
        await pilot.pause()
        assert client.pressed == ["signed-unack"]
        client.push(FIRING)  # open again: Acknowledge is back, and `u` has nothing to press
        await pilot.pause()
        await pilot.press("u")
        await pilot.pause()
        assert client.pressed == ["signed-unack"]
        assert "DiskFull: no unack button to press" in str(app.query_one("#reply", Static).render())
