"""The message follows the alert: on every platform it went to, each notification is edited as the alert is
acknowledged, muted and resolved, with only the buttons that still apply; the next firing starts fresh messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from engine.core.config import Config
from engine.plugin import discover
from engine.runs.alert_history import alert_history
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import eventually
from tests.connectors.loopchat_server import LoopchatServer
from tests.connectors.support import installed_plugin
from tests.support import ALICE_TOKEN

ROOM = "-100ops"


def _config(tmp: Path, server: LoopchatServer) -> Config:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "ops.rules").write_text("on alert notify ops with buttons\n")
    return Config.model_validate({
        "data_dir": "data", "rules_dir": "rules", "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": ["loopchat:U100"], "chat_tokens": [ALICE_TOKEN]},
                       "bob": {"roles": ["operator"], "accounts": ["loopchat:U200"]}},
        "teams": {"ops": {"members": ["alice"], "targets": [f"loopchat:{ROOM}"]}},
        "integrations": {"loopchat": {"api_url": server.url}},
    }).resolved(tmp)


async def _post(engine: Engine, status: str, *, starts: str = "2026-01-01T02:00:00Z",
                ends: str = "2026-01-01T02:26:00Z") -> None:
    alert: dict[str, Any] = {"status": status, "labels": {"alertname": "DiskFull", "severity": "critical"},
                             "annotations": {"summary": "disk full on db1"}, "fingerprint": "fp-disk",
                             "startsAt": starts}
    if status == "resolved":
        alert["endsAt"] = ends
    body = {"version": "4", "status": status, "receiver": "herald", "groupKey": "g", "alerts": [alert]}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{engine.port}/hooks/alertmanager", json=body) as response:
        assert response.status == 200, await response.text()


async def test_every_platforms_message_follows_ack_mute_and_resolve(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with running_engine(_config(tmp_path, platform_server), integrations=discover()) as engine, \
                ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
            await _post(engine, "firing")
            note = await alice.wait_for(lambda f: f["type"] == "notification")
            [posted] = await eventually(lambda: _room(platform_server), "the notification in the room")

            # bob acknowledges in the room; alice's own chat shows it too: Unacknowledge in place of Acknowledge
            platform_server.inject_press("U200", posted.message_id, _payload(posted, "Acknowledge"))
            acked = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged" in f["text"])
            assert acked["message"] == str(note["seq"]) and "✅ Acknowledged by bob at " in acked["text"]
            assert [b["label"] for b in acked["buttons"]] == ["Unacknowledge", "Mute 1h"]
            await eventually(lambda: _room_says(platform_server, "Acknowledged by bob"), "the room's edit")

            # alice mutes from her chat; both messages keep the acknowledgement and add the mute
            await alice.press(next(b["id"] for b in acked["buttons"] if b["action"] == "mute"))
            muted = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Muted" in f["text"])
            assert "Acknowledged by bob" in muted["text"] and "🔕 Muted by alice until" in muted["text"]
            assert [b["label"] for b in muted["buttons"]] == ["Unacknowledge"]
            room = await eventually(lambda: _room_says(platform_server, "Muted by alice"), "the room's mute edit")
            assert "Acknowledged by bob" in room.text and [b["text"] for b in room.buttons] == ["Unacknowledge"]

            # resolved: both say so, with how long it lasted, and show no buttons
            await _post(engine, "resolved")
            done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
            assert "✔ Resolved at 02:26 UTC, after 26m" in done["text"] and done["buttons"] == []
            await eventually(lambda: _room_says(platform_server, "Resolved at 02:26 UTC"), "the room's resolve")

            # the next firing is news again: a new message with both buttons, and the old one stays resolved
            await _post(engine, "firing", starts="2026-01-01T03:00:00Z")
            again = await alice.wait_for(lambda f: f["type"] == "notification" and f["seq"] != note["seq"])
            assert [b["label"] for b in again["buttons"]] == ["Acknowledge", "Mute 1h"]
            await alice.press(again["buttons"][0]["id"])
            await alice.wait_for(lambda f: f["type"] == "notification_edit" and f["message"] == str(again["seq"]))
            first = platform_server.chat_messages(ROOM)[0]
            assert "Resolved" in first.text and first.text.count("Acknowledged") == 1

            # the alert's history answers "who was paged, when, where": arrivals from the journal, deliveries
            # from the audit
            await engine.db.flush()
            history = await alert_history(engine.journal, engine.audit, "fp-disk")
            trail = [(entry["action"], *(entry["data"].get(k) for k in ("status", "platform", "chat")))
                     for entry in history if entry["action"] in ("alert.received", "notification.sent")]
            # alice is paged on Herald's chat and on Loopchat (her account there), and the team's room too
            assert trail[0] == ("alert.received", "firing", None, None), trail
            assert sorted(trail[1:4]) == [("notification.sent", None, "chat", "@alice"),
                                          ("notification.sent", None, "loopchat", ROOM),
                                          ("notification.sent", None, "loopchat", "U100")], trail
            assert trail[4] == ("alert.received", "resolved", None, None), trail


async def test_an_unacknowledgement_edits_every_message_and_brings_acknowledge_back(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    """Acknowledged by alice in her chat, unacknowledged by bob in the room: both conversations' messages say so
    and offer Acknowledge again, the same Acknowledge button works again, and the alert's record shows it all."""
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with running_engine(_config(tmp_path, platform_server), integrations=discover()) as engine, \
                ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
            await _post(engine, "firing")
            note = await alice.wait_for(lambda f: f["type"] == "notification")
            assert [b["label"] for b in note["buttons"]] == ["Acknowledge", "Mute 1h"]  # Unacknowledge: not yet
            [posted] = await eventually(lambda: _room(platform_server), "the notification in the room")
            assert [b["text"] for b in posted.buttons] == ["Acknowledge", "Mute 1h"]
            ack = note["buttons"][0]["id"]
            await alice.press(ack)
            await eventually(lambda: _room_says(platform_server, "Acknowledged by alice"), "the room's edit")
            assert [b["text"] for b in posted.buttons] == ["Unacknowledge", "Mute 1h"]

            platform_server.inject_press("U200", posted.message_id, _payload(posted, "Unacknowledge"))
            back = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Unacknowledged" in f["text"])
            assert back["message"] == str(note["seq"]) and "↩ Unacknowledged by bob at " in back["text"]
            assert "✅ Acknowledged" not in back["text"]
            assert [b["label"] for b in back["buttons"]] == ["Acknowledge", "Mute 1h"]
            room = await eventually(lambda: _room_says(platform_server, "Unacknowledged by bob"), "the room's edit")
            assert "✅ Acknowledged" not in room.text
            assert [b["text"] for b in room.buttons] == ["Acknowledge", "Mute 1h"]
            await eventually(lambda: _room_says(platform_server, "Unacknowledged by bob (was acknowledged by alice); "
                                                "the alert is open again."), "the answer to bob in the room")

            pid = await alice.press(ack)  # the Acknowledge button the message first came with works again
            again = await alice.wait_for(lambda f: f.get("in_reply_to") == pid and f["type"] == "reply")
            assert again["text"] == "Acknowledged by alice."
            final = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged by alice"
                                         in f["text"] and "Unacknowledged" in f["text"])
            lines = final["text"].splitlines()
            assert lines[-2].startswith("↩ Unacknowledged by bob at ")
            assert lines[-1].startswith("✅ Acknowledged by alice")

            await engine.db.flush()
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{engine.port}/api/v1/alerts/fp-disk",
                    headers={"Authorization": f"Bearer {engine.api_token}"}) as response:
                record = await response.json()
            assert record["acknowledged_by"] == "alice" and record["unacknowledged_by"] == "bob"
            [entry] = [e for e in record["history"] if e["action"] == "alert.unacknowledged"]
            assert entry["actor"] == "bob" and entry["data"]["was"] == "alice"


async def _room(server: LoopchatServer) -> list[Any]:
    return server.chat_messages(ROOM)


async def _room_says(server: LoopchatServer, text: str) -> Any:
    return next((m for m in server.chat_messages(ROOM) if text in m.text), None)


def _payload(posted: Any, label: str) -> str:
    return next(b["callback_data"] for b in posted.buttons if b["text"] == label)


async def test_a_mute_until_resolved_lasts_until_the_resolve(tmp_path: Path, platform_server: LoopchatServer) -> None:
    """`with buttons ack, mute until resolved`: the press mutes the alert with no end of its own ("until resolved" on
    every message, a week at most in the alert's record); the resolve ends it, and the next firing is heard."""
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        config = _config(tmp_path, platform_server)
        (config.rules_dir / "ops.rules").write_text("on alert notify ops with buttons ack, mute until resolved\n")
        async with running_engine(config, integrations=discover()) as engine, \
                ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
            await _post(engine, "firing")
            note = await alice.wait_for(lambda f: f["type"] == "notification")
            assert [b["label"] for b in note["buttons"]] == ["Acknowledge", "Mute until resolved"]
            pid = await alice.press(note["buttons"][1]["id"])
            answer = await alice.wait_for(lambda f: f.get("in_reply_to") == pid and f["type"] == "reply")
            assert answer["text"].startswith("Muted by alice until the alert resolves (at the latest "), answer
            muted = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Muted" in f["text"])
            assert "🔕 Muted by alice until resolved" in muted["text"]
            assert [b["label"] for b in muted["buttons"]] == ["Acknowledge"]
            await eventually(lambda: _room_says(platform_server, "Muted by alice until resolved"), "the room's edit")

            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{engine.port}/api/v1/alerts/fp-disk",
                    headers={"Authorization": f"Bearer {engine.api_token}"}) as response:
                record = await response.json()
            assert record["muted_until_resolved"] is True, record

            await _post(engine, "resolved")
            done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
            assert "Muted by alice until resolved" in done["text"] and done["buttons"] == []
            assert not (await engine.alerts.status("fp-disk")).muted_until_resolved
            await _post(engine, "firing", starts="2026-01-01T03:00:00Z")  # heard again: the mute ended
            again = await alice.wait_for(lambda f: f["type"] == "notification" and f["seq"] != note["seq"])
            assert "muted" not in again["text"].lower(), again["text"]
