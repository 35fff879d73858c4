"""An alert no rule matched is never dropped in silence: `[alerts] unmatched = "TEAM"` gets a plain notification
with Acknowledge and Mute that follows the alert, through the same delivery as `notify`; without it, a warning names the
alert; either way `herald_alerts_unmatched_total` counts it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config, load_config
from engine.core.errors import ConfigError
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url, http_url

TRIAGE = """
[teams.triage]
chat_rooms = ["triage"]

[alerts]
unmatched = "triage"
"""


def _config(config_file: Path, extra: str) -> Config:
    config_file.write_text(config_file.read_text() + extra)
    return load_config(config_file)


async def _post(engine: Engine, labels: dict[str, str], *, resolved: bool = False) -> None:
    body = alert_payload(labels, summary="something nobody wrote a rule for", resolved=resolved)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=body) as response:
            assert response.status == 200, await response.text()


async def _unmatched_total(engine: Engine) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http_url(engine)}/metrics") as response:
            text = await response.text()
    (line,) = [line for line in text.splitlines() if line.startswith("herald_alerts_unmatched_total ")]
    return float(line.split()[1])


async def test_an_unmatched_alert_goes_to_the_unmatched_team_and_follows_the_alert(config_file: Path) -> None:
    labels = {"alertname": "QueueStuck", "severity": "warning", "service": "billing"}
    async with running_engine(_config(config_file, TRIAGE)) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["triage"]) as alice:
        await _post(engine, labels)
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=10)
        assert "QueueStuck" in note["text"] and "no rule matched" in note["text"]
        assert [b["label"] for b in note["buttons"]] == ["Acknowledge", "Mute 1h"]
        assert await _unmatched_total(engine) == 1

        await alice.press(note["buttons"][0]["id"])  # Acknowledge works as on a rule's notification
        acked = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged" in f["text"],
                                     timeout=10)
        assert acked["message"] == str(note["seq"])
        assert [b["label"] for b in acked["buttons"]] == ["Unacknowledge", "Mute 1h"]

        await _post(engine, labels, resolved=True)  # the same message says it is resolved
        done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"],
                                    timeout=10)
        assert done["message"] == str(note["seq"]) and done["buttons"] == []
        assert await _unmatched_total(engine) == 1  # a resolve is not a new unmatched alert


async def test_a_matched_alert_does_not_reach_the_unmatched_team(config_file: Path) -> None:
    async with running_engine(_config(config_file, TRIAGE)) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["triage"]) as alice:
        await _post(engine, {"alertname": "DbDown", "severity": "critical", "service": "database"})  # the ops rule
        await _post(engine, {"alertname": "Other", "severity": "info", "service": "web"})
        note = await alice.wait_for(lambda f: f["type"] == "notification" and "Other" in f["text"], timeout=10)
        assert "Other" in note["text"] and "no rule matched" in note["text"]
        page = await alice.wait_for(lambda f: f["type"] == "notification" and "DbDown" in f["text"], timeout=10)
        assert "no rule matched" not in page["text"]  # alice is in ops too: she gets the rule's notification
        notes = [f for f in alice.frames if f["type"] == "notification"]
        assert not any("DbDown" in f["text"] and "no rule matched" in f["text"] for f in notes)
        assert await _unmatched_total(engine) == 1


async def test_without_an_unmatched_team_it_is_a_warning_and_a_count(
        config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.unmatched")
    async with running_engine(config) as engine:
        await _post(engine, {"alertname": "QueueStuck", "severity": "warning", "service": "billing"})
        for _ in range(100):
            if await _unmatched_total(engine) == 1:
                break
            await asyncio.sleep(0.05)
        assert await _unmatched_total(engine) == 1
        rows = await engine.db.call(lambda c: c.execute("SELECT body FROM events").fetchall())
        assert [json.loads(r["body"])["data"]["name"] for r in rows] == ["QueueStuck"]
    (warning,) = [r.getMessage() for r in caplog.records if "matched no rule" in r.getMessage()]
    assert "QueueStuck" in warning and "[alerts] unmatched" in warning


def test_the_unmatched_team_must_exist(config_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(config_file, '[alerts]\nunmatched = "night-shift"\n')
    assert "alerts.unmatched: unknown team 'night-shift' (known: ['ops'])" in str(caught.value)
