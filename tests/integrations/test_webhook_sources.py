"""`POST /hooks/grafana` and `POST /hooks/generic/<name>` over real HTTP: Grafana's documented payload becomes alert
events, a generic sender's JSON is read through its configured mapping, and both share the Alertmanager hook's
authentication, size limit, all-or-nothing acceptance and replay protection."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.plugin.discovery import validate_integrations
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from integrations.webhook import integration as webhook
from integrations.webhook.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support import ALICE_TOKEN, chat_url, http_url

# Grafana's own example body, from its webhook notifier documentation:
# https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
GRAFANA = (Path(__file__).resolve().parent / "payloads" / "grafana_firing.json").read_bytes()
BEARER = "bearer-secret-for-the-sources"
SECRET = "hmac-secret-for-the-uptime-checker"

UPTIME = {"fingerprint": "id", "status": "state", "severity": "level", "service": "check.service",
          "summary": "message", "labels": "tags", "url": "link", "firing_values": ["down"],
          "resolved_values": ["up"]}
CHECK = {"id": "chk-42", "state": "down", "level": "critical", "check": {"service": "database"},
         "message": "db1 does not answer on 5432", "tags": {"region": "eu", "port": 5432},
         "link": "https://uptime.example/checks/42"}


def _with(config: Config, webhook_section: dict[str, Any]) -> Config:
    return config.model_copy(update={"integrations": {"webhook": webhook_section}})


@pytest.fixture
async def sources_engine(config: Config) -> AsyncIterator[Engine]:
    async with running_engine(_with(config, {"generic": {"uptime": UPTIME}})) as engine:
        yield engine


async def _post(engine: Engine, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}{path}", data=body,
                                headers={"Content-Type": "application/json", **(headers or {})}) as response:
            return response.status, await response.json()


async def _journaled(engine: Engine) -> list[dict]:
    rows = await engine.db.call(lambda conn: conn.execute("SELECT body FROM events ORDER BY id").fetchall())
    return [json.loads(row["body"]) for row in rows]


# ---- Grafana ------------------------------------------------------------------------------------------------------


async def test_grafanas_documented_payload_becomes_one_event_per_alert(engine: Engine) -> None:
    status, body = await _post(engine, "/hooks/grafana", GRAFANA)
    assert status == 200 and body["accepted"] == 2
    first, second = (e for e in await _journaled(engine))
    assert first["source"] == "grafana"
    assert first["data"] == {
        "kind": "alert", "fingerprint": "c6eadffa33fcdf37", "status": "firing", "name": "High memory usage",
        "severity": None, "service": None, "summary": "This alert was triggered for zone us-1",
        "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
        "annotations": {
            "description": "The system has high memory usage", "runbook_url": "https://myrunbook.com/runbook/1234",
            "summary": "This alert was triggered for zone us-1",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers="
                          "alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
        },
        "starts_at": "2021-10-12T09:51:03.157076+02:00", "ends_at": None,
        "url": "https://play.grafana.org/alerting/1afz29v7z/edit",
    }
    assert second["data"]["fingerprint"] == "bc97ff14869b13e3"


async def test_a_grafana_alert_with_severity_and_service_labels_pages_like_an_alertmanager_one(
        engine: Engine) -> None:
    payload = json.loads(GRAFANA)
    payload["alerts"] = [dict(payload["alerts"][0], dashboardURL="https://play.grafana.org/d/abc",
                              labels={"alertname": "DbDown", "severity": "critical", "service": "database"})]
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        assert (await _post(engine, "/hooks/grafana", json.dumps(payload).encode()))[0] == 200
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=10)
    assert "DbDown" in note["text"] and "CRITICAL" in note["text"]
    (event,) = await _journaled(engine)
    assert event["data"]["annotations"]["dashboardURL"] == "https://play.grafana.org/d/abc"


async def test_a_resolved_grafana_alert_is_resolved(engine: Engine) -> None:
    payload = json.loads(GRAFANA)
    payload["status"] = "resolved"
    payload["alerts"] = [dict(payload["alerts"][0], status="resolved", endsAt="2021-10-12T10:01:03Z")]
    assert (await _post(engine, "/hooks/grafana", json.dumps(payload).encode()))[0] == 200
    (event,) = await _journaled(engine)
    assert event["data"]["status"] == "resolved" and event["data"]["ends_at"] == "2021-10-12T10:01:03Z"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda p: p.update(version="4"), "not a Grafana webhook payload (version 1): version"),
    (lambda p: p["alerts"][1].update(fingerprint=""), "alerts.1.fingerprint"),
    (lambda p: p["alerts"][1].update(status="pending"), "alerts.1.status"),
    (lambda p: p.update(alerts=[]), "alerts"),
])
async def test_a_bad_grafana_body_is_refused_whole(engine: Engine, change: Any, reason: str) -> None:
    payload = json.loads(GRAFANA)
    change(payload)
    status, body = await _post(engine, "/hooks/grafana", json.dumps(payload).encode())
    assert status == 422 and reason in body["error"]
    assert await _journaled(engine) == []  # the good first alert is not kept either


async def test_grafana_has_its_own_bearer_token(config: Config) -> None:
    cfg = _with(config, {"grafana": {"bearer_token": BEARER}})
    async with running_engine(cfg) as engine:
        assert (await _post(engine, "/hooks/grafana", GRAFANA))[0] == 401
        assert (await _post(engine, "/hooks/grafana", GRAFANA, {"Authorization": "Bearer not-the-token-00"}))[0] == 403
        assert await _journaled(engine) == []
        assert (await _post(engine, "/hooks/grafana", GRAFANA, {"Authorization": f"Bearer {BEARER}"}))[0] == 200
        # Alertmanager's route is not opened by Grafana's token, nor closed by it (loopback only, as before).
        assert (await _post(engine, "/hooks/alertmanager", b"{}"))[0] == 422


async def test_an_oversized_grafana_body_is_refused(engine: Engine) -> None:
    status, body = await _post(engine, "/hooks/grafana", b" " * (engine.config.http.max_body_bytes + 1) + GRAFANA)
    assert status == 413 and "larger" in body["error"]


# ---- generic ------------------------------------------------------------------------------------------------------


async def test_a_generic_senders_json_is_read_through_its_mapping(sources_engine: Engine) -> None:
    status, body = await _post(sources_engine, "/hooks/generic/uptime", json.dumps(CHECK).encode())
    assert status == 200 and body["accepted"] == 1
    resolved = dict(CHECK, state="up")
    assert (await _post(sources_engine, "/hooks/generic/uptime", json.dumps(resolved).encode()))[0] == 200
    firing, back = (e for e in await _journaled(sources_engine))
    assert firing["source"] == "generic/uptime"
    assert firing["data"] == {
        "kind": "alert", "fingerprint": "chk-42", "status": "firing", "name": "uptime", "severity": "critical",
        "service": "database", "summary": "db1 does not answer on 5432", "labels": {"region": "eu", "port": "5432"},
        "annotations": {}, "starts_at": None, "ends_at": None, "url": "https://uptime.example/checks/42",
    }
    assert back["data"]["status"] == "resolved"


async def test_a_generic_alert_reaches_the_rules(sources_engine: Engine) -> None:
    async with ChatClient.connect(chat_url(sources_engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        assert (await _post(sources_engine, "/hooks/generic/uptime", json.dumps(CHECK).encode()))[0] == 200
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=10)
    assert "db1 does not answer" in note["text"]


@pytest.mark.parametrize(("body", "reason"), [
    ({k: v for k, v in CHECK.items() if k != "check"}, "field 'check.service' (service) is missing"),
    (dict(CHECK, check={"service": None}), "field 'check.service' (service) is missing (null)"),
    (dict(CHECK, state="maintenance"), "field 'state' (status) is 'maintenance', expected one of down (firing) "
                                       "or up (resolved)"),
    (dict(CHECK, tags=["eu"]), "field 'tags' (labels) is a list, expected an object"),
    (dict(CHECK, message={"text": "x"}), "field 'message' (summary) is an object, expected text or a number"),
    ([CHECK, {k: v for k, v in CHECK.items() if k != "id"}], "alert 1: field 'id' (fingerprint) is missing"),
    ([], "the body is an empty list: expected an alert (a JSON object) or a list of them"),
    ("down", "expected a JSON object, found text"),
])
async def test_a_body_the_mapping_cannot_read_is_a_422_naming_the_field(
        sources_engine: Engine, body: Any, reason: str) -> None:
    status, answer = await _post(sources_engine, "/hooks/generic/uptime", json.dumps(body).encode())
    assert status == 422
    assert answer["error"] == f"not what [integrations.webhook.generic.uptime] reads: {reason}"
    assert await _journaled(sources_engine) == []


async def test_a_list_of_alerts_is_accepted_whole(sources_engine: Engine) -> None:
    body = [CHECK, dict(CHECK, id="chk-43", check={"service": "web"})]
    status, answer = await _post(sources_engine, "/hooks/generic/uptime", json.dumps(body).encode())
    assert status == 200 and answer["accepted"] == 2
    assert [e["data"]["service"] for e in await _journaled(sources_engine)] == ["database", "web"]


async def test_an_unknown_generic_source_is_a_404(sources_engine: Engine) -> None:
    status, answer = await _post(sources_engine, "/hooks/generic/pingdom", json.dumps(CHECK).encode())
    assert status == 404 and "'pingdom'" in answer["error"] and "uptime" not in answer["error"]


async def test_a_generic_source_signs_and_a_replay_is_refused(config: Config) -> None:
    cfg = _with(config, {"generic": {"uptime": {**UPTIME, "hmac_secret": SECRET}}})
    body = json.dumps(CHECK).encode()
    stamp = int(time.time())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET, stamp, body)}
    async with running_engine(cfg) as engine:
        assert (await _post(engine, "/hooks/generic/uptime", body))[0] == 401
        assert (await _post(engine, "/hooks/generic/uptime", body, headers))[0] == 200
        assert await _post(engine, "/hooks/generic/uptime", body, headers) == (
            403, {"error": "replayed request (this signature was already used)"})
        assert len(await _journaled(engine)) == 1


@pytest.mark.parametrize(("section", "problem"), [
    ({"generic": {"uptime": {"status": "state"}}}, "integrations.webhook.generic.uptime.fingerprint: Field required"),
    ({"generic": {"uptime": {**UPTIME, "service": "check..service"}}}, "not a dotted path"),
    ({"generic": {"uptime": {"fingerprint": "id", "firing_values": ["down"]}}}, "firing_values need `status`"),
    ({"generic": {"uptime": {**UPTIME, "resolved_values": ["down"]}}},
     "down is in both firing_values and resolved_values"),
    ({"generic": {"Up Time": UPTIME}}, "cannot be a source name"),
    ({"generic": {"uptime": {**UPTIME, "servcie": "x"}}}, "integrations.webhook.generic.uptime.servcie: unknown key"),
])
def test_a_mapping_is_checked_when_the_config_loads(config: Config, section: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_integrations(_with(config, section), [webhook])
    assert problem in str(caught.value)


def test_the_documented_webhook_sections_are_valid(config: Config) -> None:
    import re
    import tomllib

    from tests.support import REPO

    text = (REPO / "docs" / "configuration.md").read_text()
    documented = tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]
    settings = validate_integrations(_with(config, documented["integrations"]["webhook"]), [webhook])["webhook"]
    assert settings.generic["uptime"].service == "check.service"  # type: ignore[attr-defined]


async def test_grafana_signs_its_own_way_and_a_replay_is_refused(config: Config) -> None:
    # As Grafana's documentation describes its HMAC signing with a Timestamp Header: hex HMAC-SHA256 of
    # "<timestamp>:<body>", in X-Grafana-Alerting-Signature.
    import hashlib
    import hmac

    cfg = _with(config, {"grafana": {"hmac_secret": SECRET}})
    stamp = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{stamp}:".encode() + GRAFANA, hashlib.sha256).hexdigest()
    headers = {"X-Grafana-Alerting-Timestamp": str(stamp), "X-Grafana-Alerting-Signature": mac}
    async with running_engine(cfg) as engine:
        assert await _post(engine, "/hooks/grafana", GRAFANA, {"X-Grafana-Alerting-Signature": mac}) == (
            401, {"error": "missing X-Grafana-Alerting-Timestamp or X-Grafana-Alerting-Signature header"})
        herald_style = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET, stamp, GRAFANA)}
        assert (await _post(engine, "/hooks/grafana", GRAFANA, herald_style))[0] == 401
        tampered = GRAFANA.replace(b"High memory usage", b"Low memory usage!")
        assert await _post(engine, "/hooks/grafana", tampered, headers) == (
            403, {"error": "signature does not match the body"})
        assert (await _post(engine, "/hooks/grafana", GRAFANA, headers))[0] == 200
        assert await _post(engine, "/hooks/grafana", GRAFANA, headers) == (
            403, {"error": "replayed request (this signature was already used)"})
        assert len(await _journaled(engine)) == 2
