"""Herald's view of silences stays in step with a real Alertmanager's (issue 19): a silence Herald made that is
moved or expired in Alertmanager's API (as its UI does) moves or ends Herald's mute and edits the alert's messages;
a silence made in Alertmanager for an alert Herald holds shows the alert silenced and stops its escalation; a rule's
`silence alert` becomes an Alertmanager silence. Herald reads Alertmanager's silences every 0.2 s here; the tests
wait for what follows with a deadline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config, load_config
from engine.core.timers import ManualClock
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.conftest import ALERTMANAGER_CONFIG
from tests.e2e.stateful.support import START, audit, engine_for, tick
from tests.support import ALICE_TOKEN, Alertmanager, chat_url, free_port, http_url, start_alertmanager

LABELS = {"alertname": "DiskFull", "instance": "db1:9100", "severity": "warning", "service": "db"}
RULES = '''
rule page_db:
  on alert from db
  notify ops saying "db {alert.summary}" with buttons ack, mute 1h
  escalate to ops after 5m, repeat every 30m until acknowledged
'''
QUIET_RULES = '''
rule quiet_db:
  on alert from db
  silence alert by alert.fingerprint for 2h
'''


@asynccontextmanager
async def linked(tmp_path: Path, config_file: Path, rules: str,
                 clock: ManualClock | None = None) -> AsyncIterator[tuple[Engine, Alertmanager]]:
    """Herald told where Alertmanager is (read back every 0.2 s), and Alertmanager sending to Herald."""
    port = free_port()
    config_file.write_text(config_file.read_text() + f'\n[alerts]\nalertmanager_url = "http://127.0.0.1:{port}"\n'
                                                     "alertmanager_sync_s = 0.2\n")
    config: Config = load_config(config_file)
    async with engine_for(config, rules, clock) as engine:
        hook = f"{http_url(engine)}/hooks/alertmanager"
        async with start_alertmanager(tmp_path, ALERTMANAGER_CONFIG.format(hook=hook), port=port) as am:
            yield engine, am


async def call(method: str, url: str, body: object = None, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body,
                                                                   headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json(content_type=None)


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 20) -> Any:
    """Poll `check` until it returns something true (and return it), or fail saying `what` did not happen."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen in time")


async def fire(am: Alertmanager, alice: ChatClient) -> tuple[dict[str, Any], str]:
    """The alert fires in Alertmanager; alice's notification and the alert's fingerprint."""
    await am.post_alerts([{"labels": LABELS, "annotations": {"summary": "Disk / on db1 is 97% full"},
                           "startsAt": datetime.now(UTC).isoformat()}])
    note = await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "page_db", timeout=30)
    [alert] = await call("GET", f"{am.url}/api/v2/alerts")
    return note, str(alert["fingerprint"])


def edited(note: dict[str, Any], test: Callable[[str], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "notification_edit" and f["event"] == note["event"] and test(f["text"])


async def test_a_silence_moved_then_expired_in_alertmanager_moves_then_ends_the_mute(
        tmp_path: Path, config_file: Path) -> None:
    async with linked(tmp_path, config_file, RULES) as (engine, am), \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        note, fingerprint = await fire(am, alice)
        press = await alice.press(next(b["id"] for b in note["buttons"] if b["action"] == "mute"))
        reply = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == press, timeout=30)
        assert "Silenced in Alertmanager too" in reply["text"]
        [silence] = await call("GET", f"{am.url}/api/v2/silences")

        # bob extends it in Alertmanager's UI: the UI posts the silence back with its id and a new end
        later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
        moved = {k: silence[k] for k in ("id", "matchers", "startsAt", "comment")}
        answer = await call("POST", f"{am.url}/api/v2/silences",
                            {**moved, "endsAt": later.isoformat(), "createdBy": "bob-in-am"})
        assert answer["silenceID"] == silence["id"], "Alertmanager replaced the silence instead of editing it"
        await alice.wait_for(edited(note, lambda text: f"🔕 Muted by bob-in-am until {later:%H:%M} UTC" in text),
                             timeout=30)
        assert (await engine.alerts.status(fingerprint)).muted_until == later

        # then someone expires it there: the alert is heard again in Herald, and its message says no more mute
        await call("DELETE", f"{am.url}/api/v2/silence/{silence['id']}")
        await alice.wait_for(edited(note, lambda text: "🔕" not in text), timeout=30)
        view = await call("GET", f"{http_url(engine)}/api/v1/alerts/{fingerprint}", token=engine.api_token)
        assert view["muted_until"] is None and view["muted_by"] is None
        changes = [(e["change"], e["silence"]) for e in await audit(engine, "silence.upstream_changed")]
        assert changes == [("extended", silence["id"]), ("expired", silence["id"])]


async def test_a_silence_made_in_alertmanager_silences_the_alert_in_herald_and_stops_its_escalation(
        tmp_path: Path, config_file: Path) -> None:
    clock = ManualClock(START)
    async with linked(tmp_path, config_file, RULES, clock) as (engine, am), \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        note, fingerprint = await fire(am, alice)
        ends = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
        made = await call("POST", f"{am.url}/api/v2/silences", {
            "matchers": [{"name": "alertname", "value": "Disk.*", "isRegex": True, "isEqual": True},
                         {"name": "instance", "value": "web1:9100", "isRegex": False, "isEqual": False}],
            "startsAt": datetime.now(UTC).isoformat(), "endsAt": ends.isoformat(), "createdBy": "carol-am",
            "comment": "disk swap tonight"})

        async def silenced_in_herald() -> Any:
            view = await call("GET", f"{http_url(engine)}/api/v1/alerts/{fingerprint}", token=engine.api_token)
            return view if view["muted_in"] == "Alertmanager" else None

        view = await eventually(silenced_in_herald, "the Alertmanager silence showing on the alert")
        assert view["muted_by"] == "carol-am" and view["muted_until"] == ends.isoformat()
        await alice.wait_for(edited(note, lambda text: f"🔕 Silenced in Alertmanager by carol-am until {ends:%H:%M} UTC"
                                    in text), timeout=30)

        await tick(engine, clock, 5 * 60 + 1)  # the escalation step comes due while silenced: it is skipped
        [skipped] = await eventually(lambda: audit(engine, "escalation.skipped"), "the escalation step")
        assert skipped["alert"] == fingerprint and skipped["reason"].startswith("muted until")
        assert await audit(engine, "escalation.sent") == []

        await call("DELETE", f"{am.url}/api/v2/silence/{made['silenceID']}")  # it ends: Herald hears the alert again
        await alice.wait_for(edited(note, lambda text: "🔕" not in text), timeout=30)
        assert (await engine.alerts.status(fingerprint)).muted_until is None
        assert [e["silence"] for e in await audit(engine, "silence.upstream_ended")] == [made["silenceID"]]


async def test_a_rule_silence_becomes_an_alertmanager_silence_that_ends_with_the_alert(
        tmp_path: Path, config_file: Path) -> None:
    async with linked(tmp_path, config_file, QUIET_RULES) as (engine, am):
        await am.post_alerts([{"labels": LABELS, "startsAt": datetime.now(UTC).isoformat()}])

        async def silences() -> Any:
            return await call("GET", f"{am.url}/api/v2/silences")

        [silence] = await eventually(silences, "the rule's silence in Alertmanager")
        assert silence["status"]["state"] == "active" and silence["comment"] == "Silenced by Herald rule quiet_db"
        assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]} == {
            (name, value, True, False) for name, value in LABELS.items()}
        ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
        assert timedelta(minutes=115) < ends - datetime.now(UTC) <= timedelta(hours=2)

        [alert] = await call("GET", f"{am.url}/api/v2/alerts")
        now = datetime.now(UTC)
        resolved = {"version": "4", "groupKey": "{}:{}", "status": "resolved", "receiver": "herald",
                    "groupLabels": {}, "commonLabels": LABELS, "commonAnnotations": {}, "externalURL": "http://am",
                    "truncatedAlerts": 0,
                    "alerts": [{"status": "resolved", "labels": LABELS, "annotations": {},
                                "fingerprint": alert["fingerprint"], "startsAt": now.isoformat(),
                                "endsAt": now.isoformat(), "generatorURL": ""}]}
        await call("POST", f"{http_url(engine)}/hooks/alertmanager", resolved)

        async def expired() -> Any:
            return await engine.db.call(lambda conn: conn.execute(
                "SELECT action, data FROM audit_log WHERE action LIKE 'silence.upstream%' ORDER BY seq").fetchall()[1:])

        await eventually(expired, "the silence expiring with the alert")
        rows = await engine.db.call(lambda conn: conn.execute(
            "SELECT action, data FROM audit_log WHERE action LIKE 'silence.upstream%' ORDER BY seq").fetchall())
        assert [(r["action"], json.loads(r["data"])["silence"]) for r in rows] == [
            ("silence.upstream", silence["id"]), ("silence.upstream_expired", silence["id"])]
        found = await call("GET", f"{am.url}/api/v2/silence/{silence['id']}")
        assert found["status"]["state"] == "expired", "the silence outlived its alert"


async def test_an_alertmanager_away_is_logged_once_per_outage_and_shown_in_metrics(
        tmp_path: Path, config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald.silences")
    port = free_port()  # nothing listens there yet
    config_file.write_text(config_file.read_text() + f'\n[alerts]\nalertmanager_url = "http://127.0.0.1:{port}"\n'
                                                     "alertmanager_sync_s = 0.2\n")
    async with engine_for(load_config(config_file), RULES) as engine:

        async def up(value: str) -> bool:
            async with aiohttp.ClientSession() as session, session.get(f"{http_url(engine)}/metrics") as response:
                return f"herald_alertmanager_up {value}\n" in await response.text()

        await eventually(lambda: up("0"), "herald_alertmanager_up 0")
        for _ in range(3):  # more rounds of the same outage
            await engine.silence_sync.sync()
        away = [r for r in caplog.records if r.name == "herald.silences" and "cannot read" in r.getMessage()]
        assert len(away) == 1, "an outage is logged once, not once per round"

        async with start_alertmanager(tmp_path, ALERTMANAGER_CONFIG.format(hook=f"{http_url(engine)}/hooks/x"),
                                      port=port):
            await eventually(lambda: up("1"), "herald_alertmanager_up 1")
        assert any("answers again" in r.getMessage() for r in caplog.records if r.name == "herald.silences")
