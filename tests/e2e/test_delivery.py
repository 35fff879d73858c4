"""What people see of delivery on Herald's own chat: catch-up after a reconnect, answers that follow the person,
and a notification that reached nobody reported as a warning (audit, /metrics, the TUI's stream)."""

from __future__ import annotations

import aiohttp

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import eventually, post_alert
from tests.support import ALICE_TOKEN, chat_url, http_url


def _notes(client: ChatClient, name: str) -> list[dict]:
    return [f for f in client.frames if f["type"] == "notification" and name in f["text"]]


async def test_a_client_disconnected_while_an_alert_fired_receives_it_on_reconnect(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await post_alert(engine, "Before")
        first = await alice.wait_for(lambda f: f["type"] == "notification" and "Before" in f["text"])
    await post_alert(engine, "WhileAway")  # nobody of the team is connected now

    async def kept() -> bool:
        rows = await engine.db.call(lambda c: c.execute(
            "SELECT count(*) FROM outbox WHERE status = 'sent' AND body LIKE '%WhileAway%'").fetchone())
        return rows[0] >= 1

    await eventually(kept, "the notification to be kept for catch-up")
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        missed = await alice.wait_for(lambda f: f["type"] == "notification" and "WhileAway" in f["text"])
        await post_alert(engine, "After")
        await alice.wait_for(lambda f: f["type"] == "notification" and "After" in f["text"])
    assert missed["replay"] is True and missed["seq"] > first["seq"]
    assert _notes(alice, "Before") == []  # seen before the disconnect: not repeated
    assert len(_notes(alice, "WhileAway")) == 1  # in her room and her own conversation, shown once


async def test_since_asks_for_everything_after_a_frame_the_client_saw(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await post_alert(engine, "One")
        one = await alice.wait_for(lambda f: f["type"] == "notification" and "One" in f["text"])
        await post_alert(engine, "Two")
        await alice.wait_for(lambda f: f["type"] == "notification" and "Two" in f["text"])
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"], since=one["seq"]) as again:
        two = await again.wait_for(lambda f: f["type"] == "notification" and "Two" in f["text"])
    assert two["replay"] is True and _notes(again, "One") == []


async def test_the_result_of_a_command_reaches_the_person_after_a_reconnect(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/backup now")
        await alice.wait_for(lambda f: f["type"] == "ack" and f["id"] == msg)
        seen = max([f.get("seq", 0) for f in alice.frames])
    # the socket that asked is gone; the answer is addressed to alice, not to it
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, since=seen) as alice:
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=120)
    assert result["ok"] is True and "backup finished" in result["output"]


async def test_a_notification_that_reaches_nobody_is_a_warning_everywhere(config: Config) -> None:
    lonely = config.model_copy(update={"teams": {"ops": config.teams["ops"].model_copy(
        update={"members": ["carol"], "chat_rooms": []})}})  # carol has no chat token and nobody is connected
    async with running_engine(lonely) as engine:
        sub, unsubscribe = engine.bus.subscribe()
        await post_alert(engine, "Unheard")

        async def warned() -> list:
            return await engine.db.call(lambda c: c.execute(
                "SELECT actor, data FROM audit_log WHERE action = 'notification.unheard'").fetchall())

        [entry] = await eventually(warned, "the audit's warning")
        async with aiohttp.ClientSession() as http, http.get(f"{http_url(engine)}/metrics") as response:
            metrics = await response.text()
        seen = []
        while not sub.queue.empty():
            seen.append(sub.queue.get_nowait())
        unsubscribe()
    assert entry["actor"] == "system" and '"chat":"@carol"' in entry["data"]
    assert "herald_notifications_unreached_total 1" in metrics
    assert any(getattr(update, "action", None) == "notification.unheard" for update in seen)  # the TUI's audit
