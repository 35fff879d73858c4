"""API tokens over the real `/api/v1/stream` WebSocket: issued tokens work; expired, forged, `alg: none`, other
algorithms, revoked and wrong-purpose tokens are refused with a reason; a rotation keeps old tokens working."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from engine.cli.main import main as herald
from engine.security import keys
from engine.server.app import Engine
from tests.support import http_url


async def _connect(engine: Engine, token: str) -> tuple[int, str]:
    """Open the stream with `token`; return (HTTP status, first frame type or the refusal reason)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"{http_url(engine)}/api/v1/stream", headers=headers) as ws:
                frame = await ws.receive_json(timeout=10)
                return 101, str(frame["type"])
        except aiohttp.WSServerHandshakeError as exc:
            async with session.get(f"{http_url(engine)}/api/v1/stream", headers=headers) as response:
                return exc.status, str((await response.json())["error"])


def _issue(config_file: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert herald(["token", "issue", *args, "--config", str(config_file)]) == 0
    return capsys.readouterr().out.strip()


async def test_an_issued_token_opens_the_stream_and_a_revoked_one_does_not(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _issue(config_file, capsys, "alice", "--ttl", "1h")
    assert await _connect(engine, token) == (101, "snapshot")
    assert herald(["token", "revoke", token, "--config", str(config_file)]) == 0
    assert await _connect(engine, token) == (401, "API token refused: token was revoked")


async def test_after_a_rotation_old_and_new_tokens_both_verify(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _issue(config_file, capsys, "alice")
    assert herald(["token", "rotate", "--config", str(config_file)]) == 0
    capsys.readouterr()
    new = _issue(config_file, capsys, "bob")
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    assert await _connect(engine, old) == (101, "snapshot")
    assert await _connect(engine, new) == (101, "snapshot")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_bad_tokens_are_refused_with_a_reason(engine: Engine) -> None:
    kid, secret = await engine.db.call(keys.current_key)
    now = int(time.time())
    claims = {"iss": "herald", "aud": "api", "sub": "alice", "roles": ["admin"], "iat": now, "exp": now + 600,
              "jti": "x1"}
    cases = {
        "expired": jwt.encode(claims | {"exp": now - 1}, secret, algorithm="HS256", headers={"kid": kid}),
        "forged": jwt.encode(claims, b"not-the-key" * 3, algorithm="HS256", headers={"kid": kid}),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}.",
        "HS512": jwt.encode(claims, secret, algorithm="HS512", headers={"kid": kid}),
        "unknown key": jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "nope"}),
        "link purpose": jwt.encode(claims | {"aud": "link"}, secret, algorithm="HS256", headers={"kid": kid}),
        "garbage": "hello",
    }
    reasons = {name: await _connect(engine, token) for name, token in cases.items()}
    assert reasons == {
        "expired": (401, "API token refused: token expired"),
        "forged": (401, "API token refused: token is invalid (Signature verification failed)"),
        "alg none": (401, "API token refused: token algorithm 'none' is not accepted"),
        "HS512": (401, "API token refused: token algorithm 'HS512' is not accepted"),
        "unknown key": (401, "API token refused: token signed with an unknown key"),
        "link purpose": (401, "API token refused: token is not for api"),
        "garbage": (401, "API token refused: not a token"),
    }
    good = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
    assert await _connect(engine, good) == (101, "snapshot")  # the same claims, properly signed, do work
