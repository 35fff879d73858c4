"""A restart replays what was accepted but not finished, and effects carry idempotency keys: a replayed event
never notifies twice, never starts its task twice, never emits twice."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url, http_url

RULES = """
on command work require role admin run work.sh
on command ship require role admin emit shipped
on event shipped notify ops saying "shipped"
"""


@pytest.fixture
def workdir(config: Config) -> Config:
    (config.rules_dir / "replay.rules").write_text(RULES)
    script = config.scripts_dir / "work.sh"
    script.write_text("#!/bin/sh\necho worked\n")
    os.chmod(script, 0o755)
    return config


async def _count(engine, sql: str) -> int:  # type: ignore[no-untyped-def]
    return int(await engine.db.call(lambda c: c.execute(sql).fetchone()[0]))


async def _forget_handled(engine) -> None:  # type: ignore[no-untyped-def]
    """What a crash just before the journal noted the events handled leaves behind."""
    await engine.db.write(lambda c: c.execute("UPDATE events SET status = 'accepted'"))


async def test_a_replay_after_a_crash_does_not_repeat_effects(workdir: Config) -> None:
    async with running_engine(workdir) as engine:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            payload = alert_payload({"severity": "critical", "service": "database"}, summary="s", resolved=False)
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                    assert response.status == 200
            await alice.wait_for(lambda f: f["type"] == "notification" and "database" in f["text"])
            msg = await alice.say("/work")
            await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
            msg = await alice.say("/ship")
            await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "shipped")
        tasks_before = await _count(engine, "SELECT count(*) FROM tasks")
        events_before = await _count(engine, "SELECT count(*) FROM events")
        await _forget_handled(engine)

    async with running_engine(workdir) as engine:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
            for _ in range(100):  # the replay runs at start; wait until the journal says all is handled
                if await _count(engine, "SELECT count(*) FROM events WHERE status = 'accepted'") == 0:
                    break
                await asyncio.sleep(0.05)
            msg = await alice.say("/whoami")
            answer = await alice.wait_for(lambda f: f.get("in_reply_to") == msg)
        assert answer["type"] == "reply" and "You are alice" in answer["text"], answer
        assert not [f for f in alice.frames if f["type"] == "notification"], "a replay notified again"
        assert await _count(engine, "SELECT count(*) FROM tasks") == tasks_before == 1
        kinds = await engine.db.call(lambda c: c.execute("SELECT id, kind, status FROM events").fetchall())
        assert len(kinds) == events_before + 1, [tuple(row) for row in kinds]  # only the /whoami
        rows = await engine.db.call(lambda c: c.execute("SELECT body FROM tasks").fetchall())
        assert json.loads(rows[0]["body"])["status"] == "succeeded"
