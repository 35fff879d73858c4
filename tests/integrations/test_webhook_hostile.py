"""Hostile encodings on `POST /hooks/alertmanager`, over real HTTP: a body nested a thousand deep, a lone UTF-16
surrogate in a label, a raw 0xE9 byte in `Authorization` or `X-Herald-Signature`. Each is a 4xx with a reason,
nothing is journaled, and the engine goes on accepting good alerts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import running_engine
from integrations.webhook.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.rawhttp import raw_request

BODY = (Path(__file__).resolve().parent / "payloads" / "alertmanager_firing.json").read_bytes()
BEARER = "bearer-secret-for-alertmanager"
HMAC_SECRET = "hmac-secret-for-alertmanager"
JSON = {"Content-Type": b"application/json"}


async def _journaled(engine: Engine) -> int:
    return int(await engine.db.call(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]))


async def _post(engine: Engine, headers: dict[str, bytes], body: bytes) -> tuple[int, str]:
    status, payload = await raw_request(engine.port or 0, "POST", "/hooks/alertmanager", {**JSON, **headers}, body)
    return status, str(payload.get("error", payload))


@pytest.mark.parametrize("nesting", [b'{"a":', b"["])
async def test_a_body_nested_a_thousand_deep_is_a_400(engine: Engine, nesting: bytes) -> None:
    closing = b"}" if nesting.startswith(b"{") else b"]"
    status, reason = await _post(engine, {}, nesting * 1000 + b"1" + closing * 1000)
    assert (status, reason) == (400, "body is not valid JSON: nested too deeply")
    assert await _journaled(engine) == 0
    assert (await _post(engine, {}, BODY))[0] == 200


async def test_a_lone_surrogate_in_a_label_is_a_400_and_nothing_is_journaled(engine: Engine) -> None:
    payload = json.loads(BODY)
    payload["alerts"][0]["labels"]["instance"] = "db1\ud800"
    body = json.dumps(payload).encode()  # ensure_ascii writes it as the escape \ud800
    assert b"\\ud800" in body
    status, reason = await _post(engine, {}, body)
    assert status == 400
    assert reason == ("body is not valid JSON: alerts.0.labels.instance holds a lone UTF-16 surrogate (\\ud800); "
                      "text must be valid Unicode")
    assert await _journaled(engine) == 0
    pair = json.dumps(payload).replace("\\ud800", "\\ud83d\\ude80").encode()  # a proper pair (a rocket) is fine
    assert (await _post(engine, {}, pair))[0] == 200


@pytest.fixture
async def bearer_engine(config: Config) -> AsyncIterator[Engine]:
    cfg = config.model_copy(update={"integrations": {"webhook": {"alertmanager": {"bearer_token": BEARER}}}})
    async with running_engine(cfg) as engine:
        yield engine


@pytest.fixture
async def hmac_engine(config: Config) -> AsyncIterator[Engine]:
    cfg = config.model_copy(update={"integrations": {"webhook": {"alertmanager": {"hmac_secret": HMAC_SECRET}}}})
    async with running_engine(cfg) as engine:
        yield engine


async def test_a_raw_non_ascii_byte_in_authorization_is_a_400(bearer_engine: Engine) -> None:
    status, reason = await _post(bearer_engine, {"Authorization": b"Bearer caf\xe9-token-0123456789"}, BODY)
    assert (status, reason) == (400, "the Authorization header must be ASCII")
    assert await _journaled(bearer_engine) == 0
    assert (await _post(bearer_engine, {"Authorization": f"Bearer {BEARER}".encode()}, BODY))[0] == 200


async def test_a_raw_non_ascii_byte_in_the_signature_is_a_400(hmac_engine: Engine) -> None:
    now = int(time.time())
    good = sign(HMAC_SECRET, now, BODY).encode()
    for header, value in ((SIGNATURE_HEADER, good[:-1] + b"\xe9"), (TIMESTAMP_HEADER, b"\xe9")):
        stamp = {TIMESTAMP_HEADER: str(now).encode(), SIGNATURE_HEADER: good, header: value}
        status, reason = await _post(hmac_engine, stamp, BODY)
        assert (status, reason) == (400, f"the {header} header must be ASCII")
    assert await _journaled(hmac_engine) == 0
    assert (await _post(hmac_engine, {TIMESTAMP_HEADER: str(now).encode(), SIGNATURE_HEADER: good}, BODY))[0] == 200
