"""The local operator's API token (issue 18 item 5): it lives a day, not a month, and a restart revokes the one the
previous run left in the data folder, so copies of it stop working."""

from __future__ import annotations

import aiohttp
import jwt

from engine.core.config import Config
from engine.server.local_token import API_TOKEN_FILE
from engine.testing import running_engine


async def _stream_status(port: int, token: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(f"http://127.0.0.1:{port}/api/v1/stream",
                                       headers={"Authorization": f"Bearer {token}"}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_a_restart_revokes_the_previous_runs_local_token(config: Config) -> None:
    async with running_engine(config) as first:
        previous = (config.data_dir / API_TOKEN_FILE).read_text().strip()
        assert previous == first.api_token
        claims = jwt.decode(previous, options={"verify_signature": False})
        assert claims["local"] is True and claims["exp"] - claims["iat"] <= 24 * 3600
        assert await _stream_status(first.port, previous) == 101
    async with running_engine(config) as second:
        current = (config.data_dir / API_TOKEN_FILE).read_text().strip()
        assert current != previous
        assert await _stream_status(second.port, previous) == 401
        assert await _stream_status(second.port, current) == 101
        revoked = await second.db.call(lambda c: c.execute(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'token.revoked'").fetchone())
    assert revoked["n"] == 1
