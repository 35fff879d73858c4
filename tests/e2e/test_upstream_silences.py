"""A Mute pressed in chat on an Alertmanager alert becomes a silence in that (real) Alertmanager, and the silence
is expired when the alert resolves; an Alertmanager that cannot be reached never fails the mute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from engine.core.config import Config, load_config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.conftest import ALERTMANAGER_CONFIG
from tests.support import ALICE_TOKEN, Alertmanager, chat_url, free_port, http_url, start_alertmanager

LABELS = {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical", "service": "database"}


def with_alertmanager(config_file: Path, url: str) -> Config:
    config_file.write_text(config_file.read_text() + f'\n[alerts]\nalertmanager_url = "{url}"\n')
    return load_config(config_file)


@pytest.fixture
async def linked(tmp_path: Path, config_file: Path) -> AsyncIterator[tuple[Engine, Alertmanager]]:
    """Herald told where Alertmanager is, and Alertmanager sending to Herald."""
    port = free_port()
    async with running_engine(with_alertmanager(config_file, f"http://127.0.0.1:{port}")) as engine:
        hook = f"{http_url(engine)}/hooks/alertmanager"
        async with start_alertmanager(tmp_path, ALERTMANAGER_CONFIG.format(hook=hook), port=port) as am:
            yield engine, am


async def get(url: str) -> object:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def resolve(engine: Engine, fingerprint: str) -> None:
    """What Alertmanager posts when the alert resolves (sent here directly: Alertmanager mutes what is silenced)."""
    now = datetime.now(UTC)
    payload = {"version": "4", "groupKey": "{}:{}", "status": "resolved", "receiver": "herald", "groupLabels": {},
               "commonLabels": LABELS, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
               "alerts": [{"status": "resolved", "labels": LABELS, "annotations": {}, "fingerprint": fingerprint,
                           "startsAt": (now - timedelta(minutes=5)).isoformat(), "endsAt": now.isoformat(),
                           "generatorURL": ""}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()


async def mute(alice: ChatClient) -> str:
    note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)
    press = await alice.press(next(b["id"] for b in note["buttons"] if b["action"] == "mute"))
    reply = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == press, timeout=30)
    return str(reply["text"])


async def test_a_mute_becomes_an_alertmanager_silence_that_ends_with_the_alert(
        linked: tuple[Engine, Alertmanager]) -> None:
    engine, am = linked
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await am.post_alerts([{"labels": LABELS, "annotations": {"summary": "Disk / on db1 is 97% full"},
                               "startsAt": datetime.now(UTC).isoformat()}])
        text = await mute(alice)
    assert text.startswith("Muted by alice") and "Silenced in Alertmanager too" in text

    [silence] = await get(f"{am.url}/api/v2/silences")  # type: ignore[misc]
    assert silence["status"]["state"] == "active" and silence["createdBy"] == "alice"
    assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]} == {
        (name, value, True, False) for name, value in LABELS.items()}
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < ends - datetime.now(UTC) <= timedelta(hours=1)
    [alert] = await get(f"{am.url}/api/v2/alerts?silenced=true")  # type: ignore[misc]
    assert alert["status"]["state"] == "suppressed" and silence["id"] in alert["status"]["silencedBy"]

    await resolve(engine, alert["fingerprint"])
    for _ in range(100):  # the resolve is handled after the hook's 200
        rows = await engine.db.call(lambda conn: conn.execute(
            "SELECT action, data FROM audit_log WHERE action LIKE 'silence.upstream%' ORDER BY seq").fetchall())
        if len(rows) == 2:
            break
        await asyncio.sleep(0.1)
    state = (await get(f"{am.url}/api/v2/silence/{silence['id']}"))["status"]["state"]  # type: ignore[index]
    assert state == "expired", "the silence outlived its alert"
    assert [(r["action"], json.loads(r["data"])["silence"]) for r in rows] == [
        ("silence.upstream", silence["id"]), ("silence.upstream_expired", silence["id"])]


async def test_an_unreachable_alertmanager_never_fails_the_mute(config_file: Path) -> None:
    config = with_alertmanager(config_file, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    async with running_engine(config) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await resolve_or_fire(engine, "firing")
        text = await mute(alice)
        assert text.startswith("Muted by alice") and "could not be told" in text
        status = await engine.alerts.status("fp-down")
        assert status.muted_by == "alice"  # Herald's own mute holds
        rows = await engine.db.call(lambda conn: conn.execute(
            "SELECT data FROM audit_log WHERE action = 'silence.upstream_failed'").fetchall())
        assert [json.loads(r["data"])["step"] for r in rows] == ["create"]


async def resolve_or_fire(engine: Engine, status: str) -> None:
    payload = {"version": "4", "groupKey": "{}:{}", "status": status, "receiver": "herald", "groupLabels": {},
               "commonLabels": LABELS, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
               "alerts": [{"status": status, "labels": LABELS, "annotations": {}, "fingerprint": "fp-down",
                           "startsAt": datetime.now(UTC).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                           "generatorURL": ""}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()
