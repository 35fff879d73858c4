"""An open `/api/v1/stream` does not outlive its token: `herald token revoke` (run as a separate process, as an admin
would) closes it within seconds, and so does the token's expiry, each with the reason in the close frame."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from engine.server.app import Engine
from engine.server.token_watch import CLOSE_CODE, RECHECK_S
from tests.support import REPO, http_url

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _herald(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60,
                            env=ENV)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def _closed_after(engine: Engine, token: str, action=None) -> tuple[int | None, str, float]:  # type: ignore[no-untyped-def]
    """Open the stream, read the snapshot, run `action`; return the close code, reason and seconds it took."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{http_url(engine)}/api/v1/stream",
                                      headers={"Authorization": f"Bearer {token}"}) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            start = time.monotonic()
            if action is not None:
                action()
            while True:
                msg = await ws.receive(timeout=RECHECK_S + 10)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return ws.close_code, str(msg.extra or ""), time.monotonic() - start


async def test_revoking_a_token_closes_its_open_stream(engine: Engine, config_file: Path) -> None:
    token = _herald("token", "issue", "alice", "--ttl", "1h", "--config", str(config_file))
    code, reason, took = await _closed_after(
        engine, token, lambda: _herald("token", "revoke", token, "--config", str(config_file)))
    assert (code, reason) == (CLOSE_CODE, "API token refused: token was revoked")
    assert took < RECHECK_S + 3


async def test_a_token_expiring_closes_its_open_stream_on_time(engine: Engine, config_file: Path) -> None:
    token = _herald("token", "issue", "bob", "--ttl", "3s", "--config", str(config_file))
    code, reason, took = await _closed_after(engine, token)
    assert (code, reason) == (CLOSE_CODE, "API token refused: token expired")
    assert took < 5  # at its expiry, not at the next periodic check
