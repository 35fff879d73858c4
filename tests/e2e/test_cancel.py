"""`/cancel TASK_ID` from chat: the requester or an admin stops a running task (its container goes away) or a
pending one; anyone else is refused."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    (config.rules_dir / "long.rules").write_text("on command long run long.sh\n")
    script = config.scripts_dir / "long.sh"
    script.write_text("#!/bin/sh\necho started\nsleep 60\necho never\n")
    os.chmod(script, 0o755)
    async with running_engine(config.model_copy(update={"workers": 1})) as engine:
        yield engine


async def _running_task(engine: Engine, status: str) -> str:
    for _ in range(200):
        for task in await engine.tasks.recent(10):
            if task.status == status:
                return task.task_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {status} task")


async def test_cancel_running_and_pending_tasks(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        first = await bob.say("/long")
        running = await _running_task(engine, "running")
        await bob.say("/long")  # waits behind the first (one worker)
        pending = await _running_task(engine, "pending")

        msg = await bob.say(f"/cancel {pending}")  # bob started it himself
        answer = await bob.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
        assert answer["text"] == f"Cancelled task {pending} before it started."

        msg = await alice.say(f"/cancel {running}")  # alice is an admin
        answer = await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
        assert answer["text"].startswith(f"Stopping task {running}")
        result = await bob.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == first, timeout=30)
        assert result["ok"] is False and "cancelled by alice" in result["text"]

        msg = await bob.say(f"/cancel {running}")
        answer = await bob.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
        assert answer["text"] == f"Task {running} already cancelled."
    statuses = {t.task_id: t.status for t in await engine.tasks.recent(10)}
    assert statuses == {running: "cancelled", pending: "cancelled"}


async def test_only_the_requester_or_an_admin_may_cancel(engine: Engine, config: Config) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await alice.say("/long")
        running = await _running_task(engine, "running")
        msg = await bob.say(f"/cancel {running}")  # bob is a viewer and did not start it
        answer = await bob.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
        assert answer["text"] == "Denied: only the person who started a task, or an admin, may cancel it."
        msg = await alice.say(f"/cancel {running}")
        await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")


async def _reply(client: ChatClient, text: str) -> str:
    msg = await client.say(text)
    return str((await client.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply"))["text"])


async def test_short_task_ids_work_in_cancel_and_task_and_an_ambiguous_one_lists_the_candidates(
        engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await bob.say("/long")
        running = await _running_task(engine, "running")
        await bob.say("/long")
        pending = await _running_task(engine, "pending")
        # the TUI shows an id's last 8 characters; people type them in any case
        assert await _reply(bob, f"/task {pending[-8:].lower()}") == \
            f"Task {pending} (long.sh, started by bob): pending."
        ambiguous = await _reply(bob, f"/cancel {running[:4]}")  # ids made moments apart share their start
        assert ambiguous == f"'{running[:4]}' could be any of these tasks: {pending}, {running}. Type more of its id."
        assert await _reply(bob, "/cancel 01") == "There is no task '01'."  # too short to mean one
        assert await _reply(bob, f"/cancel {pending[-8:]}") == f"Cancelled task {pending} before it started."
        assert (await _reply(bob, f"/cancel {running[:-1]}")).startswith(f"Stopping task {running}")
        assert (await _reply(bob, "/help task")).startswith("/task TASK_ID: how a task you started")
