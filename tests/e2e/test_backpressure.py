"""Bounded admission: when `max_queued_events` accepted events wait for the dispatcher, webhooks get 503 with
Retry-After and chat gets "busy"; nothing refused is journaled, and everything accepted is handled later."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.server import dispatch
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, chat_url, http_url, stalled_engine


@pytest.fixture
async def stalled(config: Config) -> AsyncIterator[tuple[Engine, asyncio.Event]]:
    async with stalled_engine(config, max_queued_events=3) as stalled:
        yield stalled


async def _post(engine: Engine, n: int) -> tuple[int, dict, str | None]:
    payload = alert_payload({"severity": "info", "service": f"s{n}"}, summary="x", resolved=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            return response.status, await response.json(), response.headers.get("Retry-After")


async def _all_handled(engine: Engine) -> None:
    """Wait (at most 5 s) until every journaled event is marked handled."""
    for _ in range(100):
        if not await engine.db.call(lambda c: c.execute(
                "SELECT count(*) FROM events WHERE status != 'handled'").fetchone()[0]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("accepted events were not all handled")


async def test_a_full_queue_refuses_new_work_and_loses_nothing_accepted(stalled: tuple[Engine, asyncio.Event]) -> None:
    engine, gate = stalled
    # Three accepted events are waiting (the stalled dispatchers hold them); the fourth is refused.
    statuses = [(await _post(engine, n))[0] for n in range(3)]
    assert statuses == [200, 200, 200]
    status, body, retry_after = await _post(engine, 99)
    assert status == 503 and retry_after == "1" and "waiting" in body["error"]
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/help")
        busy = await alice.wait_for(lambda f: f.get("in_reply_to") == msg)
    assert busy["type"] == "error" and busy["code"] == "busy"
    rows = await engine.db.call(lambda c: c.execute("SELECT body FROM events").fetchall())
    assert sorted(json.loads(r["body"])["data"]["service"] for r in rows) == ["s0", "s1", "s2"]

    gate.set()
    await _all_handled(engine)
    assert (await _post(engine, 100))[0] == 200  # room again


async def test_a_burst_kept_as_journal_bodies_is_handled_like_any_other(
        stalled: tuple[Engine, asyncio.Event], monkeypatch: pytest.MonkeyPatch) -> None:
    """Past WAITING_AS_OBJECTS waiting events the queue keeps each event's journaled JSON (here: from the first),
    and the rule runs get the same event back: the default rules notify ops of a critical database alert."""
    engine, gate = stalled
    monkeypatch.setattr(dispatch, "WAITING_AS_OBJECTS", 0)
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        for service in ("database", "web"):
            payload = alert_payload({"severity": "critical", "service": service, "alertname": "Down"},
                                    summary=f"{service} is down", resolved=False)
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                    assert response.status == 200
        gate.set()
        note = await alice.wait_for(lambda f: f.get("type") == "notification")
    assert "database" in note["text"] and "database is down" in note["text"]
    assert [b["label"] for b in note["buttons"]] == ["Acknowledge", "Mute 1h"]
    await _all_handled(engine)
