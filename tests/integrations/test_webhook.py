"""`POST /hooks/alertmanager` over real HTTP: Alertmanager's exact bytes are accepted, bad bodies are refused whole."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from engine.server.app import Engine
from tests.support import http_url

# Alertmanager 0.25's exact webhook bytes, captured from a real instance and kept with the tests.
PAYLOADS = Path(__file__).resolve().parent / "payloads"
FIRING = (PAYLOADS / "alertmanager_firing.json").read_bytes()
RESOLVED = (PAYLOADS / "alertmanager_resolved.json").read_bytes()


async def _post(engine: Engine, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", data=body,
                                headers={"Content-Type": content_type}) as response:
            return response.status, await response.json()


async def _journaled(engine: Engine) -> list[dict]:
    rows = await engine.db.call(lambda conn: conn.execute("SELECT body FROM events ORDER BY id").fetchall())
    return [json.loads(row["body"]) for row in rows]


async def test_alertmanagers_exact_payloads_become_alert_events(engine: Engine) -> None:
    status, body = await _post(engine, FIRING)
    assert status == 200 and body["accepted"] == 1
    status, _ = await _post(engine, RESOLVED)
    assert status == 200
    firing, resolved = (e["data"] for e in await _journaled(engine))
    assert firing == {
        "kind": "alert", "fingerprint": "1751650d45bf7d6b", "status": "firing", "name": "DiskFull",
        "severity": "critical", "service": "node", "summary": "Disk / on db1 is 97% full",
        "labels": {"alertname": "DiskFull", "instance": "db1:9100", "job": "node", "severity": "critical"},
        "annotations": {"runbook": "/backup now", "summary": "Disk / on db1 is 97% full"},
        "starts_at": "2026-11-24T10:14:07.464855Z", "ends_at": None,
        "url": "http://prometheus.local/graph?g0.expr=disk",
    }
    assert resolved["status"] == "resolved" and resolved["ends_at"] is not None


async def test_every_alert_in_a_payload_is_one_event(engine: Engine) -> None:
    payload = json.loads(FIRING)
    second = dict(payload["alerts"][0], fingerprint="ffff", labels={"alertname": "Other", "severity": "info"})
    payload["alerts"].append(second)
    status, body = await _post(engine, json.dumps(payload).encode())
    assert status == 200 and body["accepted"] == 2
    assert [e["data"]["fingerprint"] for e in await _journaled(engine)] == ["1751650d45bf7d6b", "ffff"]


@pytest.mark.parametrize(("body", "content_type", "status", "reason"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"version": "4", "status": "firing", "alerts": []}', "application/json", 422, "alerts"),
    (b'{"version": "3", "status": "firing", "alerts": [{}]}', "application/json", 422, "version"),
    (b"[1, 2]", "application/json", 422, "Alertmanager"),
    (FIRING.replace(b'"fingerprint":"1751650d45bf7d6b"', b'"fingerprint":""'), "application/json", 422,
     "fingerprint"),
    (FIRING.replace(b'"startsAt":"2026-11-24T10:14:07.464855Z"', b'"startsAt":"yesterday"'), "application/json",
     422, "startsAt"),
    (FIRING, "text/plain", 415, "application/json"),
])
async def test_bad_bodies_get_a_reason_and_nothing_is_journaled(
    engine: Engine, body: bytes, content_type: str, status: int, reason: str
) -> None:
    got, answer = await _post(engine, body, content_type)
    assert got == status
    assert reason in answer["error"]
    assert await _journaled(engine) == []


async def test_an_oversized_body_is_refused(engine: Engine) -> None:
    got, answer = await _post(engine, b" " * (engine.config.http.max_body_bytes + 1) + FIRING)
    assert got == 413 and "larger" in answer["error"]
    assert await _journaled(engine) == []
