"""An alert's web links reach its notification as link buttons (issue 19): Alertmanager's `generatorURL` and runbook
and dashboard annotations, Grafana's documented links, a generic source's mapped URL. Over real HTTP into a running
engine, read as Herald's chat shows them (the `links` of the notification frame, docs/chat-protocol.md); they stay on
the message as it follows the alert, and a link that is not http(s) never becomes something to tap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from engine.core.config import Config
from engine.plugin import LinkButton
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url, http_url

GRAFANA = (Path(__file__).resolve().parents[1] / "integrations" / "payloads" / "grafana_firing.json").read_bytes()
RUNBOOK = "https://wiki.example.com/runbooks/disk-full"
GRAPH = "http://prometheus.example:9090/graph?g0.expr=disk_used%20%3E%200.95&g0.tab=1"
UPTIME = {"fingerprint": "id", "status": "state", "severity": "level", "service": "check.service",
          "summary": "message", "url": "link", "firing_values": ["down"], "resolved_values": ["up"]}


def _alertmanager(status: str, annotations: dict[str, str]) -> dict[str, Any]:
    alert: dict[str, Any] = {"status": status, "labels": {"alertname": "DiskFull", "severity": "critical",
                                                          "service": "database"},
                             "annotations": {"summary": "disk full on db1", **annotations}, "fingerprint": "fp-disk",
                             "startsAt": "2026-01-01T02:00:00Z", "generatorURL": GRAPH}
    if status == "resolved":
        alert["endsAt"] = "2026-01-01T02:10:00Z"
    return {"version": "4", "status": status, "receiver": "herald", "groupKey": "g", "alerts": [alert]}


async def _post(engine: Engine, path: str, body: Any) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as http, \
            http.post(f"{http_url(engine)}{path}", data=data, headers={"Content-Type": "application/json"}) as answer:
        assert answer.status == 200, await answer.text()


def _links(frame: dict[str, Any]) -> list[tuple[str, str]]:
    return [(link["label"], link["url"]) for link in frame["links"]]


async def test_alertmanagers_links_are_link_buttons_that_stay_through_ack_and_resolve(engine: Engine) -> None:
    annotations = {"runbook_url": RUNBOOK, "dashboard_url": "javascript:alert(document.cookie)"}
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await _post(engine, "/hooks/alertmanager", _alertmanager("firing", annotations))
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        assert _links(note) == [("Runbook", RUNBOOK), ("Source", GRAPH)]  # no javascript: "Dashboard"

        await alice.press(next(b["id"] for b in note["buttons"] if b["label"] == "Acknowledge"))
        acked = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged" in f["text"])
        assert _links(acked) == _links(note)

        await _post(engine, "/hooks/alertmanager", _alertmanager("resolved", annotations))
        done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
        assert done["buttons"] == [] and _links(done) == _links(note)


async def test_grafanas_documented_links_are_link_buttons(engine: Engine) -> None:
    payload = json.loads(GRAFANA)
    alert = payload["alerts"][0]
    payload["alerts"] = [dict(alert, labels={**alert["labels"], "severity": "critical", "service": "database"},
                              panelURL="https://play.grafana.org/d/abc?viewPanel=4")]
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await _post(engine, "/hooks/grafana", json.dumps(payload).encode())
        note = await alice.wait_for(lambda f: f["type"] == "notification")
    # Grafana's example: runbook_url annotation, generatorURL, silenceURL; dashboardURL is "" there (left out).
    assert _links(note) == [("Runbook", "https://myrunbook.com/runbook/1234"),
                            ("Panel", "https://play.grafana.org/d/abc?viewPanel=4"),
                            ("Source", "https://play.grafana.org/alerting/1afz29v7z/edit"),
                            ("Silence", alert["silenceURL"])]


async def test_a_generic_sources_mapped_url_is_a_link_button(config: Config) -> None:
    sections = {**config.integrations, "webhook": {"generic": {"uptime": UPTIME}}}
    check = {"id": "chk-42", "state": "down", "level": "critical", "check": {"service": "database"},
             "message": "db1 does not answer on 5432", "link": "https://uptime.example/checks/42"}
    async with running_engine(config.model_copy(update={"integrations": sections})) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await _post(engine, "/hooks/generic/uptime", check)
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        assert _links(note) == [("Source", "https://uptime.example/checks/42")]
        await _post(engine, "/hooks/generic/uptime", dict(check, id="chk-43", link="file:///etc/passwd"))
        other = await alice.wait_for(lambda f: f["type"] == "notification" and f["seq"] != note["seq"])
        assert other["links"] == []


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JAVASCRIPT://x.example/%0aalert(1)", "data:text/html,<b>",
                                 "file:///etc/passwd", "ftp://files.example/x", "/relative/path", "https://",
                                 "https://user:secret@grafana.example/d/1", "https://a.example/x y",
                                 "https://a.example:port/", "https://a.example/" + "x" * 2100])
def test_a_link_button_is_an_http_or_https_url_only(url: str) -> None:
    with pytest.raises(ValidationError):
        LinkButton(label="Open", url=url)
    assert LinkButton(label="Open", url="https://grafana.example/d/1?x=1#y").url.startswith("https://")
