"""Herald's chat writes a session's outbox frames of one event-loop turn together; on a real WebSocket over loopback,
they still arrive whole and in order, and a frame of its own (an ack, an error) never overtakes them."""

from __future__ import annotations

import asyncio
import json

import websockets
from aiohttp import web

from integrations.chat.connector import Cork, Session
from tests.support import free_port


async def test_held_frames_arrive_in_order_and_a_frame_of_its_own_does_not_overtake_them() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(id="s1", account="config:alice", principal="alice", rooms=frozenset(), ws=ws,
                          transport=request.transport, cork=Cork())
        for seq in range(1, 101):  # one turn of the loop: all held, written together at its end
            assert session.push(seq, json.dumps({"seq": seq}))
        await session.send_json({"type": "ack"})  # written at once: the held frames must go first
        assert session.push(101, json.dumps({"seq": 101}))
        await ws.receive()  # the client's goodbye
        return ws

    app = web.Application()
    app.router.add_get("/chat", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as client:
            frames = [json.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(102)]
            await client.send("bye")
    finally:
        await runner.cleanup()
    assert frames[:100] == [{"seq": seq} for seq in range(1, 101)]
    assert frames[100:] == [{"type": "ack"}, {"seq": 101}]
