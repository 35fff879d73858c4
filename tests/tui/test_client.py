"""RemoteEngineClient against a small real aiohttp server on loopback that speaks the /api/v1/stream protocol."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.client.remote import (
    AuthRejected,
    NotConnected,
    RemoteEngineClient,
    Reply,
    TokenMissing,
    Update,
    backoff,
    classify,
    parse_frame,
    read_api_token,
    stream_url,
)
from engine.client.snapshots import EventView, Snapshot, TaskView

TOKEN = "t0ken-for-tests"

EVENT = EventView(
    id="E1", kind="alert", source="webhook", time="2025-11-27T17:40:05+00:00", summary="disk full"
)
TASK = TaskView(
    task_id="T1",
    platform="chat",
    command="/backup now",
    script="backup.sh",
    args=["now"],
    status="running",
    create_time="2025-11-27T17:40:06+00:00",
)
TASK_DONE = TASK.model_copy(update={"status": "succeeded", "exit_code": 0})


@dataclass
class FakeEngine:
    """The engine's stream endpoint, reduced to the protocol; counts what clients did to it."""

    drop_first_connection: bool = False
    silent: bool = False  # takes commands and drops the connection without answering
    url: str = ""
    attempts: int = 0
    connections: int = 0
    commands: list[dict] = field(default_factory=list)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "invalid API token"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        snapshot = Snapshot(events=[EVENT], tasks=[TASK])
        await ws.send_json({"type": "snapshot", "snapshot": snapshot.model_dump(mode="json")})
        await ws.send_json({"type": "event", "item": EVENT.model_dump(mode="json")})
        await ws.send_json({"type": "task", "item": TASK_DONE.model_dump(mode="json")})
        if self.drop_first_connection and self.connections == 1:
            await ws.close()
            return ws
        async for msg in ws:
            frame = json.loads(msg.data)
            self.commands.append(frame)
            if self.silent:
                await ws.close()
                break
            await ws.send_json({"type": "reply", "id": frame["id"], "text": f"ok: {frame['text']}"})
        return ws


@pytest.fixture
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[FakeEngine]:
    fake = FakeEngine(drop_first_connection=getattr(request, "param", False))
    app = web.Application()
    app.router.add_get("/api/v1/stream", fake.stream)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


def fast() -> Iterator[float]:
    """Reconnect delays short enough for tests."""
    return itertools.repeat(0.01)


async def take(updates: AsyncIterator[Update], n: int) -> list[Update]:
    """The next `n` updates, failing the test instead of hanging if they do not come."""
    async with asyncio.timeout(5):
        return [await anext(updates) for _ in range(n)]


async def test_yields_snapshot_then_items_and_round_trips_a_command(engine: FakeEngine) -> None:
    client = RemoteEngineClient(engine.url, TOKEN, delays=fast)
    updates = client.updates()
    snapshot, event, task = await take(updates, 3)
    assert snapshot == Snapshot(events=[EVENT], tasks=[TASK])
    assert (event, task) == (EVENT, TASK_DONE)
    assert client.status == "connected"

    await client.send_command("/backup now")
    [reply] = await take(updates, 1)
    assert [c["text"] for c in engine.commands] == ["/backup now"]
    assert reply == Reply(id=engine.commands[0]["id"], text="ok: /backup now")

    await client.close()
    async with asyncio.timeout(5):
        assert [u async for u in updates] == []
    assert client.status == "closed"


async def test_a_command_the_dropped_connection_took_unanswered_is_reported(engine: FakeEngine) -> None:
    engine.silent = True
    client = RemoteEngineClient(engine.url, TOKEN, delays=fast)
    updates = client.updates()
    await take(updates, 3)
    await client.send_command("/backup now")
    [lost] = [u for u in await take(updates, 1) if isinstance(u, Reply)]
    assert lost == Reply(id=engine.commands[0]["id"], error=True, text=(
        "no answer to /backup now: the connection to the engine dropped before it answered; it may not have run "
        "(see the Audit tab once reconnected)"))
    await client.close()
    await updates.aclose()


async def test_close_while_the_consumer_waits_for_frames_ends_updates(engine: FakeEngine) -> None:
    client = RemoteEngineClient(engine.url, TOKEN, delays=fast)
    received: list[Update] = []

    async def consume() -> None:
        async for update in client.updates():
            received.append(update)

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        group.create_task(consume())
        while len(received) < 3:
            await asyncio.sleep(0.01)
        await client.close()  # the consumer is blocked reading the socket right now
    assert engine.connections == 1 and client.status == "closed"


async def test_wrong_token_is_fatal_and_not_retried(engine: FakeEngine) -> None:
    client = RemoteEngineClient(engine.url, "wrong", delays=fast)
    with pytest.raises(AuthRejected, match="rejected the API token"):
        async with asyncio.timeout(5):
            async for _ in client.updates():
                pytest.fail("a refused client must not yield updates")
    assert engine.attempts == 1
    assert client.status.startswith("failed: ") and "HTTP 401" in client.status


async def test_a_client_that_rereads_its_token_tries_a_new_one_once_and_gives_up_on_the_same(
        engine: FakeEngine) -> None:
    """The engine renews its local token and a restarted engine refuses the previous run's: a client given the
    token file's reader connects with the new token; one whose token stays refused gives up."""
    tokens = iter(["previous-runs-token", TOKEN])
    renewed = RemoteEngineClient(engine.url, lambda: next(tokens), delays=fast)
    updates = renewed.updates()
    [snapshot] = await take(updates, 1)
    assert isinstance(snapshot, Snapshot) and engine.attempts == 2
    await renewed.close()

    stale = RemoteEngineClient(engine.url, lambda: "previous-runs-token", delays=fast)
    with pytest.raises(AuthRejected, match="rejected the API token"):
        async with asyncio.timeout(5):
            async for _ in stale.updates():
                pytest.fail("a refused client must not yield updates")
    assert engine.attempts == 4


@pytest.mark.parametrize("engine", [True], indirect=True)
async def test_dropped_connection_is_reconnected_with_a_fresh_snapshot(engine: FakeEngine) -> None:
    client = RemoteEngineClient(engine.url, TOKEN, delays=fast)
    updates = client.updates()
    got = await take(updates, 6)
    assert [type(u) for u in got] == [Snapshot, EventView, TaskView] * 2
    assert engine.connections == 2
    assert client.status == "connected"
    await client.close()
    async with asyncio.timeout(5):
        assert [u async for u in updates] == []


async def test_unreachable_engine_is_retried_until_closed() -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    delays_used = 0

    def counted() -> Iterator[float]:
        nonlocal delays_used
        for delay in itertools.repeat(0.01):
            delays_used += 1
            yield delay

    client = RemoteEngineClient(f"http://127.0.0.1:{port}", TOKEN, delays=counted)

    async def consume() -> list[Update]:
        return [u async for u in client.updates()]

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        consumer = group.create_task(consume())
        while delays_used < 3:
            await asyncio.sleep(0.01)
        assert client.status.startswith("disconnected, retrying in ")
        with pytest.raises(NotConnected):
            await client.send_command("/backup now")
        await client.close()
    assert consumer.result() == []
    assert client.status == "closed"


def test_read_api_token(tmp_path: Path) -> None:
    with pytest.raises(
        TokenMissing, match=r"no API token at .*api-token: is `herald run` running with --data"
    ):
        read_api_token(tmp_path)
    (tmp_path / "api-token").write_text("")
    with pytest.raises(TokenMissing, match="empty"):
        read_api_token(tmp_path)
    (tmp_path / "api-token").write_text("abc123\n")
    assert read_api_token(tmp_path) == "abc123"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    low = list(itertools.islice(backoff(initial=1, cap=8, rng=lambda: 0.0), 6))
    high = list(itertools.islice(backoff(initial=1, cap=8, rng=lambda: 1.0), 6))
    assert low == [0.5, 1, 2, 4, 4, 4]
    assert high == [1, 2, 4, 8, 8, 8]
    delays = itertools.islice(backoff(initial=1, cap=8), 6)
    assert all(lo <= d <= hi for lo, d, hi in zip(low, delays, high, strict=True))


def test_classify_and_parse_frame() -> None:
    def handshake(status: int) -> aiohttp.WSServerHandshakeError:
        return aiohttp.WSServerHandshakeError(None, (), status=status)  # type: ignore[arg-type]

    assert classify(handshake(401)) == "fatal"
    assert classify(handshake(503)) == "retry"
    assert classify(ConnectionRefusedError()) == "retry"
    assert parse_frame('{"type": "reply", "id": "c1", "text": "done"}') == Reply(id="c1", text="done")
    assert parse_frame("not json") is None
    assert parse_frame('{"type": "task", "item": {"task_id": "x"}}') is None
    assert parse_frame('{"type": "future-thing"}') is None
    assert str(stream_url("http://127.0.0.1:8470")) == "http://127.0.0.1:8470/api/v1/stream"
    assert str(stream_url("http://h:1/api/v1/stream")) == "http://h:1/api/v1/stream"
