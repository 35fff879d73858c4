"""The replay window of signed webhooks survives a restart (seen signatures are kept in the engine's database for the
window), and a signature is remembered only once its body was accepted: a sender's retry after a 422 or a 503 is
handled like the first try, not refused as a replay."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiohttp

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import running_engine
from integrations.webhook.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support import http_url, stalled_engine

BODY = (Path(__file__).resolve().parent / "payloads" / "alertmanager_firing.json").read_bytes()
SECRET = "hmac-secret-for-alertmanager"
REPLAYED = (403, "replayed request (this signature was already used)")


def _signed(config: Config) -> Config:
    return config.model_copy(update={"integrations": {"webhook": {"alertmanager": {
        "hmac_secret": SECRET, "replay_window_s": 300}}}})


def _headers(body: bytes, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET, stamp, body),
            "Content-Type": "application/json"}


async def _post(engine: Engine, headers: dict[str, str], body: bytes = BODY) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", data=body, headers=headers) as response:
            return response.status, (await response.json()).get("error", "")


async def _journaled(engine: Engine) -> int:
    return int(await engine.db.call(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]))


async def test_a_restart_does_not_reopen_the_replay_window(config: Config) -> None:
    headers = _headers(BODY)
    async with running_engine(_signed(config)) as engine:
        assert await _post(engine, headers) == (200, "")
    async with running_engine(_signed(config)) as engine:
        assert await _post(engine, headers) == REPLAYED
        assert await _journaled(engine) == 1  # the first one only


async def test_a_retry_after_a_422_is_not_a_replay(config: Config) -> None:
    bad = json.dumps({"version": "4", "status": "firing", "alerts": [{"status": "firing"}]}).encode()
    headers = _headers(bad)
    async with running_engine(_signed(config)) as engine:
        first = await _post(engine, headers, bad)
        assert first[0] == 422
        assert await _post(engine, headers, bad) == first  # the same answer, not "replayed"


async def test_a_retry_after_a_503_is_accepted_and_then_it_is_a_replay(config: Config) -> None:
    async with stalled_engine(_signed(config), max_queued_events=1) as (engine, gate):
        assert (await _post(engine, _headers(BODY, int(time.time()) - 1)))[0] == 200  # fills the queue
        headers = _headers(BODY)
        status, reason = await _post(engine, headers)
        assert status == 503 and reason.startswith("try again later")
        gate.set()
        for _ in range(200):
            if engine.waiting == 0:
                break
            await asyncio.sleep(0.05)
        assert await _post(engine, headers) == (200, "")
        assert await _post(engine, headers) == REPLAYED
        assert await _journaled(engine) == 2


async def test_the_same_signed_request_twice_at_once_is_accepted_once(config: Config) -> None:
    headers = _headers(BODY)
    async with running_engine(_signed(config)) as engine:
        results = await asyncio.gather(*(_post(engine, headers) for _ in range(4)))
        assert sorted(status for status, _ in results)[0] == 200
        assert [status for status, _ in results].count(200) == 1
        assert await _journaled(engine) == 1
        assert await _post(engine, headers) == REPLAYED


async def test_seen_signatures_are_pruned_after_their_window(config: Config) -> None:
    async with running_engine(_signed(config)) as engine:
        old = int(time.time()) - 299  # inside the window for one more second
        assert await _post(engine, _headers(BODY, old)) == (200, "")
        await asyncio.sleep(1.5)
        assert await _post(engine, _headers(BODY)) == (200, "")  # remembering it prunes the expired one
        rows = await engine.db.call(lambda c: c.execute(
            "SELECT count(*) FROM plugin_kv WHERE namespace = 'webhook'").fetchone()[0])
        assert rows == 1


async def test_a_store_made_before_entries_could_expire_is_migrated(config: Config) -> None:
    config.data_dir.mkdir(mode=0o700)
    with sqlite3.connect(config.data_dir / "herald.db") as conn:  # plugin_kv as the version before made it
        conn.execute("CREATE TABLE plugin_kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
                     "PRIMARY KEY (namespace, key))")
        conn.execute("INSERT INTO plugin_kv VALUES ('chat', 'cursor/x', '7')")
    headers = _headers(BODY)
    async with running_engine(_signed(config)) as engine:
        assert await _post(engine, headers) == (200, "")
        assert await _post(engine, headers) == REPLAYED
        assert await engine.store("chat").get("cursor/x") == "7"  # kept, and never expires
