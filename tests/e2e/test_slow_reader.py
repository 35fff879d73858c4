"""One chat client that stops reading must not slow anyone else: its unsent frames are bounded, it is dropped once
they pass the bound, and it catches up from the outbox when it reconnects (issue 21, item 7).

Bob's client stops reading for real: a socket with a 4 kB receive buffer and a WebSocket client whose queue holds one
frame, so once both are full TCP pushes back on Herald. Alice reads everything meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import websockets

from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url, http_url, one_by_one

ALERTS = 600
SUMMARY_CHARS = 12_000  # ~7 MB of notifications in all: past the kernel's socket buffers and the session's bound


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    async with running_engine(one_by_one(config)) as engine:  # 600 notifications, not one storm digest
        yield engine


async def post_alerts(engine: Engine) -> None:
    async with aiohttp.ClientSession() as session:
        for first in range(0, ALERTS, 50):
            payload = alert_payload({"severity": "critical", "service": "database"}, summary="x", resolved=False)
            template = payload["alerts"][0]  # type: ignore[index]
            payload["alerts"] = [dict(template, fingerprint=f"fp{n:05d}",  # type: ignore[index]
                                      annotations={"summary": f"alert-{n:05d} " + "x" * SUMMARY_CHARS})
                                 for n in range(first, first + 50)]
            async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                assert response.status == 200, await response.text()


async def test_a_client_that_stops_reading_is_dropped_and_holds_back_no_one(engine: Engine) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", engine.port))
    sock.setblocking(False)
    stalled = await websockets.connect(chat_url(engine), sock=sock, max_queue=1, max_size=None)
    await stalled.send(json.dumps({"type": "auth", "token": BOB_TOKEN, "rooms": ["ops"]}))
    assert json.loads(await stalled.recv())["type"] == "welcome"

    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        sender = asyncio.ensure_future(post_alerts(engine))
        alerts: set[str] = set()
        while len(alerts) < ALERTS:  # bob reads nothing all this time
            frame = await alice.wait_for(lambda f: f["type"] == "notification", timeout=120)
            alice.frames.remove(frame)
            alerts.add(frame["text"].split("alert-", 1)[1][:5])
        await sender
    assert len(alerts) == ALERTS, "the healthy client missed notifications"

    last_seen = 0  # bob now reads what was buffered for him: then the connection ends, as Herald dropped him
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frame = json.loads(await asyncio.wait_for(stalled.recv(), 30))
            last_seen = max(last_seen, int(frame.get("seq", 0)))
    newest = await newest_to_the_room(engine)
    assert last_seen < newest, "bob was never held back: the test did not stall him"

    async with ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"], since=last_seen) as bob:
        await bob.wait_for(lambda f: f["type"] == "caught_up", timeout=60)
        replayed = [f for f in bob.frames if f.get("replay") and f["type"] == "notification"]
    assert replayed and int(replayed[-1]["seq"]) == newest, "the reconnect did not catch bob up"


async def newest_to_the_room(engine: Engine) -> int:
    return int(await engine.db.call(lambda conn: conn.execute(
        "SELECT max(seq) FROM outbox WHERE platform = 'chat' AND chat = '#ops'").fetchone()[0]))
