"""The TUI against a real engine: an alert posted over HTTP appears in its events table, a command runs from it."""

from __future__ import annotations

import asyncio

import aiohttp
from textual.widgets import DataTable

from engine.app import Engine
from engine.cli_client import alert_payload
from engine.client import RemoteEngineClient
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
