"""Helpers shared by the tests: well-known tokens, URLs of a running engine, a real Alertmanager handle."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from engine.app import Engine

REPO = Path(__file__).resolve().parents[1]
ALICE_TOKEN = "alice-chat-token-0123456789"
BOB_TOKEN = "bob-chat-token-0123456789ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_url(engine: Engine) -> str:
    return f"ws://127.0.0.1:{engine.port}/chat"


def http_url(engine: Engine) -> str:
    return f"http://127.0.0.1:{engine.port}"


class Alertmanager:
    """A running Prometheus Alertmanager process and its v2 API."""

    def __init__(self, url: str, process) -> None:  # type: ignore[no-untyped-def]
        self.url = url
        self.process = process

    async def post_alerts(self, alerts: list[dict[str, object]]) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/api/v2/alerts", json=alerts) as response:
                assert response.status == 200, await response.text()
