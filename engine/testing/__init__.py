"""Reusable test helpers for Herald and its plugins: a real chat client and a running in-process engine.

They talk to Herald over real WebSocket and HTTP connections on loopback, exactly as users' clients do.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import websockets

from dsl import EventGraph
from engine.core.config import Config
from engine.plugin.api import Integration
from engine.plugin.discovery import active_integrations, connector_specs
from engine.reload.rules import compile_paths
from engine.server.app import Engine


class ChatClient:
    """A Herald chat client (docs/chat-protocol.md) that keeps every frame it receives for assertions."""

    def __init__(self, ws: websockets.ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.frames: list[dict[str, Any]] = []
        self._seq = 0
        # unique per client: one that reconnects is sent the history since, with its earlier ids in in_reply_to
        self._prefix = secrets.token_hex(3)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, token: str, rooms: list[str] | None = None,
                      since: int | None = None) -> AsyncIterator[ChatClient]:
        """Connect and authenticate; `since`: the seq of the last frame seen, to be caught up from."""
        async with websockets.connect(url) as ws:
            auth: dict[str, Any] = {"type": "auth", "token": token, "rooms": rooms or []}
            if since is not None:
                auth["since"] = since
            await ws.send(json.dumps(auth))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if welcome.get("type") != "welcome":
                raise PermissionError(f"chat refused the token: {welcome}")
            yield cls(ws, welcome)

    async def say(self, text: str) -> str:
        """Send a message; return its client id (replies carry it as in_reply_to)."""
        self._seq += 1
        client_id = f"m{self._prefix}-{self._seq}"
        await self.ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
        return client_id

    async def press(self, button_id: str) -> str:
        self._seq += 1
        client_id = f"p{self._prefix}-{self._seq}"
        await self.ws.send(json.dumps({"type": "press", "id": client_id, "button": button_id}))
        return client_id

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        """Return the first frame (already received or arriving) that satisfies `predicate`."""
        for frame in self.frames:
            if predicate(frame):
                return frame

        async def _next() -> dict[str, Any]:
            while True:
                frame = json.loads(await self.ws.recv())
                self.frames.append(frame)
                if predicate(frame):
                    return frame

        return await asyncio.wait_for(_next(), timeout)

    def replies_to(self, client_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("in_reply_to") == client_id or f.get("id") == client_id]


@asynccontextmanager
async def running_engine(config: Config, graph: EventGraph | None = None, *,
                         integrations: Sequence[Integration] | None = None) -> AsyncIterator[Engine]:
    """Start an engine (compiling the config's rules folder unless a graph is given) with the installed
    integrations or the ones given; stop it afterwards."""
    teams: tuple = ()
    if graph is None:
        connectors = connector_specs(active_integrations(config, integrations)) if integrations is not None else None
        result = compile_paths([config.rules_dir], config, connectors)
        if result.graph is None:
            raise AssertionError("rules do not compile:\n" + result.render_all())
        graph, teams = result.graph, result.teams
    engine = Engine(config, graph, teams=teams, integrations=integrations)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
