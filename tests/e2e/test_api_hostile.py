"""Hostile encodings on /api/v1 over real HTTP and WebSocket: a raw 0xE9 byte in `Authorization` is a 4xx with a
reason; a frame nested a thousand deep or with a lone UTF-16 surrogate in a command gets an error of its own, and
the same socket goes on working."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from engine.server.app import Engine
from tests.rawhttp import raw_request
from tests.support import http_url


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/stream"), ("POST", "/api/v1/reload")])
async def test_a_raw_non_ascii_byte_in_authorization_is_a_400(engine: Engine, method: str, path: str) -> None:
    headers = {"Authorization": b"Bearer " + engine.api_token.encode()[:-1] + b"\xe9"}
    assert await raw_request(engine.port or 0, method, path, headers) == \
        (400, {"error": "the Authorization header must be ASCII"})
    good = {"Authorization": f"Bearer {engine.api_token}".encode()}
    assert (await raw_request(engine.port or 0, "POST", "/api/v1/reload", good))[0] == 200


async def _next(ws: aiohttp.ClientWebSocketResponse, kinds: set[str]) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json(timeout=20)
        if frame["type"] in kinds:
            return frame


async def test_hostile_frames_get_their_own_error_and_the_socket_goes_on(engine: Engine) -> None:
    headers = {"Authorization": f"Bearer {engine.api_token}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{http_url(engine)}/api/v1/stream", headers=headers) as ws:
            await ws.send_str('{"a":' * 1000 + "1" + "}" * 1000)
            assert await _next(ws, {"error", "reply"}) == {"type": "error", "message": "nested too deeply"}
            await ws.send_str(json.dumps({"type": "command", "id": "s", "as": "alice", "text": "/help \ud800"}))
            assert await _next(ws, {"error", "reply"}) == {
                "type": "error", "message": "text holds a lone UTF-16 surrogate (\\ud800); text must be valid Unicode"}
            await ws.send_str(json.dumps({"type": "command", "id": "h", "as": "alice", "text": "/help"}))
            reply = await _next(ws, {"error", "reply"})
            assert reply["id"] == "h" and reply["text"].startswith("You can run:")
    assert await engine.db.call(lambda c: c.execute(
        "SELECT count(*) FROM events WHERE body LIKE '%help%'").fetchone()[0]) == 1
