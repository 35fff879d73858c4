"""A real Alertmanager posts a firing alert; the ops team's chat client gets it with buttons and acknowledges it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from engine.server.app import Engine
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, BOB_TOKEN, Alertmanager, chat_url


def _alert(severity: str, service: str, name: str = "DiskFull") -> dict[str, object]:
    return {
        "labels": {"alertname": name, "instance": "db1:9100", "severity": severity, "service": service},
        "annotations": {"summary": "Disk / on db1 is 97% full"},
        "startsAt": datetime.now(UTC).isoformat(),
        "generatorURL": "http://prometheus.local/graph",
    }


async def _audit_rows(engine: Engine, action: str) -> list[dict[str, object]]:
    rows = await engine.db.call(
        lambda conn: conn.execute("SELECT actor, data FROM audit_log WHERE action = ?", (action,)).fetchall()
    )
    return [{"actor": row["actor"], **json.loads(row["data"])} for row in rows]


async def test_alertmanager_alert_reaches_ops_with_buttons_and_ack_is_audited(
    engine: Engine, alertmanager: Alertmanager
) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await alertmanager.post_alerts([_alert("critical", "database")])
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)

        assert "database" in note["text"] and "DiskFull" in note["text"] and "CRITICAL" in note["text"]
        assert [(b["label"], b["action"], b["arg"]) for b in note["buttons"]] == [
            ("Acknowledge", "ack", None), ("Mute 1h", "mute", "1h")]
        assert not any(f["type"] == "notification" for f in bob.frames)  # bob is not in team ops

        ack_button = next(b["id"] for b in note["buttons"] if b["action"] == "ack")
        press_id = await alice.press(ack_button)
        await alice.wait_for(lambda f: f["type"] == "ack" and f["id"] == press_id)
        reply = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == press_id)
        assert reply["text"] == "Acknowledged by alice."

    presses = await _audit_rows(engine, "button.pressed")
    assert [(p["actor"], p["button"]) for p in presses] == [("alice", "ack")]
    assert presses[0]["source_event"] == note["event"]


async def test_alert_that_no_rule_matches_notifies_nobody(engine: Engine, alertmanager: Alertmanager) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await alertmanager.post_alerts([_alert("warning", "database", "SlowQueries"),
                                        _alert("critical", "web", "Down")])
        # Both alerts arrive (Alertmanager groups by alertname), then a matching one proves delivery works.
        await alertmanager.post_alerts([_alert("critical", "database", "Later")])
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)
        await asyncio.sleep(1.5)  # let Alertmanager deliver any other group it still holds
    notes = [f for f in alice.frames if f["type"] == "notification"]
    assert [n["text"] for n in notes] == [note["text"]] and "Later" in note["text"]
    kinds = await engine.db.call(lambda conn: conn.execute("SELECT body FROM events").fetchall())
    names = sorted(json.loads(row["body"])["data"]["name"] for row in kinds)
    assert names == ["Down", "Later", "SlowQueries"]  # all journaled, only one matched


async def test_unknown_button_is_refused(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        press_id = await alice.press("forged-button-id")
        error = await alice.wait_for(lambda f: f["type"] == "error" and f["in_reply_to"] == press_id)
    assert error["code"] == "button_refused" and "unknown button" in error["message"]
    assert await _audit_rows(engine, "button.pressed") == []
    assert [r["reason"] for r in await _audit_rows(engine, "button.refused")] == ["unknown button"]
