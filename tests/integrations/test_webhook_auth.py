"""Webhook senders authenticate per source: bearer token (also from a real Alertmanager), or an HMAC signature
with a timestamp and replay window; with nothing configured only loopback may post. Refusals store nothing."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from integrations.webhook.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support import ALICE_TOKEN, chat_url, http_url, start_alertmanager

BODY = (Path(__file__).resolve().parent / "payloads" / "alertmanager_firing.json").read_bytes()
BEARER = "bearer-secret-for-alertmanager"
HMAC_SECRET = "hmac-secret-for-alertmanager"


@pytest.fixture
async def bearer_engine(config: Config) -> AsyncIterator[Engine]:
    cfg = config.model_copy(update={"integrations": {"webhook": {"alertmanager": {"bearer_token": BEARER}}}})
    async with running_engine(cfg) as engine:
        yield engine


@pytest.fixture
async def hmac_engine(config: Config) -> AsyncIterator[Engine]:
    cfg = config.model_copy(update={"integrations": {"webhook": {"alertmanager": {
        "hmac_secret": HMAC_SECRET, "replay_window_s": 60}}}})
    async with running_engine(cfg) as engine:
        yield engine


async def _post(url: str, headers: dict[str, str], body: bytes = BODY) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/hooks/alertmanager", data=body,
                                headers={"Content-Type": "application/json", **headers}) as response:
            return response.status, (await response.json()).get("error", "")


async def _journaled(engine: Engine) -> int:
    return int(await engine.db.call(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]))


async def test_bearer_token(bearer_engine: Engine) -> None:
    url = http_url(bearer_engine)
    assert await _post(url, {}) == (401, "missing bearer token (Authorization: Bearer ...)")
    assert await _post(url, {"Authorization": "Bearer wrong-token-000000"}) == (403, "wrong bearer token")
    assert await _journaled(bearer_engine) == 0
    assert await _post(url, {"Authorization": f"Bearer {BEARER}"}) == (200, "")
    assert await _journaled(bearer_engine) == 1


async def test_hmac_signature_timestamp_and_replay_window(hmac_engine: Engine) -> None:
    url = http_url(hmac_engine)
    now = int(time.time())
    good = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(HMAC_SECRET, now, BODY)}
    assert await _post(url, {}) == (401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    assert await _post(url, {**good, SIGNATURE_HEADER: sign("another-secret-000000", now, BODY)}) == \
        (403, "signature does not match the body")
    assert await _post(url, good, BODY.replace(b"97%", b"12%")) == (403, "signature does not match the body")
    old = now - 120
    assert await _post(url, {TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(HMAC_SECRET, old, BODY)}) == \
        (403, "timestamp outside the 60 s replay window")
    assert await _journaled(hmac_engine) == 0
    assert await _post(url, good) == (200, "")
    assert await _post(url, good) == (403, "replayed request (this signature was already used)")
    assert await _journaled(hmac_engine) == 1


def _own_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, it only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_without_authentication_only_loopback_may_post(config: Config) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to post from")
    cfg = config.model_copy(update={"http": config.http.model_copy(update={"host": "0.0.0.0"})})
    async with running_engine(cfg) as engine:
        assert (await _post(f"http://{address}:{engine.port}", {}))[0] == 401
        assert await _journaled(engine) == 0
        assert await _post(http_url(engine), {}) == (200, "")


ALERTMANAGER_WITH_BEARER = """\
route: {{receiver: herald, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: herald
    webhook_configs:
      - url: {hook}
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


async def test_a_real_alertmanager_authenticates_with_its_bearer_token(bearer_engine: Engine, tmp_path: Path) -> None:
    config = ALERTMANAGER_WITH_BEARER.format(hook=f"{http_url(bearer_engine)}/hooks/alertmanager", token=BEARER)
    async with start_alertmanager(tmp_path, config) as am, \
            ChatClient.connect(chat_url(bearer_engine), ALICE_TOKEN) as alice:
        await am.post_alerts([{"labels": {"alertname": "Auth", "severity": "critical", "service": "database"}}])
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)
    assert "Auth" in note["text"]
    rows = await bearer_engine.db.call(lambda c: c.execute("SELECT body FROM events").fetchall())
    assert [json.loads(r["body"])["data"]["name"] for r in rows] == ["Auth"]
