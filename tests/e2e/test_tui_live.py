"""The TUI against a real engine: a posted alert appears in its events and alerts tables, its buttons are pressed
from the Alerts tab, a command runs from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from textual.widgets import DataTable, Static

from engine.cli.client import alert_payload
from engine.client.remote import RemoteEngineClient, Reply
from engine.client.snapshots import Snapshot
from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import running_engine
from tests.support import http_url
from tui import make_app


def _rows(table: DataTable) -> list[str]:
    return [" | ".join(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


async def _until(pilot, predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the TUI did not show it in time"
        await pilot.pause(0.05)


async def test_a_posted_alert_appears_in_the_tui(engine: Engine) -> None:
    app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
    async with app.run_test(size=(140, 40)) as pilot:
        events = app.query_one("#events-table", DataTable)
        audit = app.query_one("#audit-table", DataTable)
        await _until(pilot, lambda: any("engine.started" in row for row in _rows(audit)))
        assert not any("PagerTest" in row for row in _rows(events))

        payload = alert_payload({"alertname": "PagerTest", "severity": "critical", "service": "database"},
                                summary="replica lag 30s", resolved=False)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                assert response.status == 200

        await _until(pilot, lambda: any("PagerTest" in row for row in _rows(events)))
        row = next(row for row in _rows(events) if "PagerTest" in row)
        assert "alert" in row and "database" in row and "replica lag 30s" in row


async def _post(engine: Engine, payload: dict[str, object]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()


@pytest.fixture
async def carols_engine(config: Config) -> AsyncIterator[Engine]:
    """An engine whose local API token acts as carol (the config's api_principal), as `herald init` sets it up."""
    async with running_engine(config.model_copy(update={"api_principal": "carol"})) as engine:
        yield engine


async def test_an_operator_acknowledges_and_mutes_an_alert_from_the_alerts_tab(carols_engine: Engine) -> None:
    """The default rules notify ops with buttons for a critical database alert: the Alerts tab shows it with those
    buttons, `a` and `m` press them as the operator (audited like a chat press), and a resolve clears them."""
    engine = carols_engine
    labels = {"alertname": "DiskFull", "severity": "critical", "service": "database"}
    app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
    async with app.run_test(size=(160, 40)) as pilot:
        alerts = app.query_one("#alerts-table", DataTable)
        reply = app.query_one("#reply", Static)
        await _post(engine, alert_payload(labels, summary="/var is 97% full", resolved=False))
        await _until(pilot, lambda: any("[Acknowledge] [Mute 1h]" in row for row in _rows(alerts)))
        row = _rows(alerts)[0]
        assert "critical | database | DiskFull — /var is 97% full | open" in row

        await pilot.press("6", "a")
        await _until(pilot, lambda: "acked by carol" in _rows(alerts)[0])
        row = _rows(alerts)[0]
        assert "[Acknowledge]" not in row and "[Mute 1h]" in row
        await _until(pilot, lambda: "Acknowledged by carol" in str(reply.render()))

        await pilot.press("a")  # that button was used: nothing is sent, and the operator is told why
        assert "no ack button to press" in str(reply.render())

        await pilot.press("m")
        await _until(pilot, lambda: "muted until" in _rows(alerts)[0])
        assert "[Mute 1h]" not in _rows(alerts)[0]
        pressed = [e for e in engine.bus.snapshot().audit if e.action == "button.pressed"]
        assert [e.actor for e in pressed] == ["carol", "carol"]

        await _post(engine, alert_payload(labels, summary="/var is 97% full", resolved=True))
        await _until(pilot, lambda: "| resolved |" in _rows(alerts)[0])
        assert "acked by" not in _rows(alerts)[0] and "[" not in _rows(alerts)[0].rsplit("|", 1)[1]


async def _first_reply(engine: Engine, send: Callable[[RemoteEngineClient], Awaitable[None]]) -> str:
    """Connect to the engine's stream, wait for its snapshot, `send` something, and return the first reply."""
    client = RemoteEngineClient(http_url(engine), engine.api_token)
    updates = client.updates()
    try:
        assert isinstance(await anext(updates), Snapshot)
        await send(client)
        async with asyncio.timeout(10):
            reply = await anext(update async for update in updates if isinstance(update, Reply))
        return reply.text
    finally:
        await client.close()
        await updates.aclose()


async def test_a_forged_press_over_the_stream_is_refused_and_audited(carols_engine: Engine) -> None:
    text = await _first_reply(carols_engine, lambda client: client.press("not-a-signed-button"))
    assert text.startswith("Refused: ")
    assert any(e.action == "button.refused" for e in carols_engine.bus.snapshot().audit)


async def test_without_an_api_principal_the_local_token_is_told_how_to_act_as_a_person(engine: Engine) -> None:
    text = await _first_reply(engine, lambda client: client.send_command("/whoami"))
    assert text == ("Unknown principal 'local-operator'. The engine's local token acts as the config's "
                    "api_principal: set it to a person in herald.toml")
