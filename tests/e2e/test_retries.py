"""`run ... retry N times backoff D`: a failed attempt of a sandboxed script is tried again after a doubling delay,
under the same task id, in real Podman; the chat sees each retry, the result and the `on task failed` event come
once, after the last attempt; a waiting retry survives a restart and can be cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from engine.core.config import Config
from engine.server.app import Engine
from engine.tasks.queue import TaskRecord
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url

# Succeeds from attempt $1 on: the sandbox keeps nothing between runs, so the attempt number decides.
FLAKY = '#!/bin/sh\necho "attempt $HERALD_ATTEMPT of task $HERALD_TASK_ID"\n[ "$HERALD_ATTEMPT" -ge "$1" ]\n'
RULES = """\
on command flaky <until: int> require role admin run flaky.sh args "{command.until}" retry 2 times backoff 1s
on command slow-flaky <until: int> require role admin run flaky.sh args "{command.until}" retry 1 times backoff 4s
on task flaky.sh failed notify ops saying "gave up on {task.task_id}: {task.status}"
"""


@pytest.fixture
def retry_config(config: Config) -> Config:
    (config.rules_dir / "retry.rules").write_text(RULES)
    script = config.scripts_dir / "flaky.sh"
    script.write_text(FLAKY)
    os.chmod(script, 0o755)
    return config


@pytest.fixture
async def engine(retry_config: Config) -> AsyncIterator[Engine]:
    async with running_engine(retry_config) as engine:
        yield engine


async def audit_rows(engine: Engine, action: str) -> list[dict[str, object]]:
    rows = await engine.db.call(lambda conn: conn.execute(
        "SELECT data FROM audit_log WHERE action = ? ORDER BY seq", (action,)).fetchall())
    return [json.loads(row["data"]) for row in rows]


async def drain(client: ChatClient, seconds: float) -> None:
    """Collect whatever arrives within `seconds` (a doubled frame would be among it)."""
    with contextlib.suppress(TimeoutError):
        await client.wait_for(lambda _frame: False, timeout=seconds)


async def the_task(engine: Engine, status: str | None = None, timeout: float = 30) -> TaskRecord:
    for _ in range(int(timeout / 0.05)):
        tasks = await engine.tasks.recent(5)
        if tasks and (status is None or tasks[-1].status == status):
            return tasks[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no task with status {status}")


async def test_a_failing_script_is_retried_with_doubling_backoff_until_it_succeeds(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/flaky 3")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
        retries = [f["detail"] for f in alice.frames if f["type"] == "progress" and f["in_reply_to"] == msg
                   and "retrying" in f["detail"]]

    assert result["ok"] is True and result["text"] == "flaky.sh succeeded (exit code 0) on attempt 3 of 3"
    assert result["output"].startswith("attempt 3 of task ")
    assert retries == ["flaky.sh failed (exit code 1); retrying in 1s (attempt 2 of 3)",
                       "flaky.sh failed (exit code 1); retrying in 2s (attempt 3 of 3)"]
    task = await the_task(engine, "succeeded")
    assert task.attempt == 3 and task.earlier == ["flaky.sh failed (exit code 1)"] * 2

    # The backoff was honoured: each attempt started no earlier than its retry's moment (1 s, then 2 s later).
    waits = await audit_rows(engine, "task.retry")
    assert [w["attempt"] for w in waits] == [2, 3] and {w["task"] for w in waits} == {task.task_id}
    first, second = (datetime.fromisoformat(str(w["not_before"])) for w in waits)
    assert task.start_time is not None and task.start_time >= second
    assert (second - first).total_seconds() >= 2.0  # the second wait is double the first, after attempt 2 ran
    finished = await audit_rows(engine, "task.finished")
    assert [(f["task"], f["status"], f["attempt"]) for f in finished] == [(task.task_id, "succeeded", 3)]


async def test_the_last_failure_is_reported_once_and_raises_the_task_event_once(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        msg = await alice.say("/flaky 9")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)
        await drain(alice, 1.0)
        results = [f for f in alice.frames if f["type"] == "result"]
        notes = [f for f in alice.frames if f["type"] == "notification"]

    assert result["ok"] is False and result["text"] == "flaky.sh failed (exit code 1) on attempt 3 of 3"
    task = await the_task(engine, "failed")
    assert note["text"] == f"gave up on {task.task_id}: failed"
    assert len(results) == 1 and len(notes) == 1
    assert task.attempt == 3 and task.earlier == ["flaky.sh failed (exit code 1)"] * 2


async def test_a_waiting_retry_can_be_cancelled_and_is_not_run_again(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/slow-flaky 2")
        await alice.wait_for(lambda f: f["type"] == "progress" and "retrying in 4s" in f["detail"], timeout=30)
        task = await the_task(engine, "pending")
        cancel = await alice.say(f"/cancel {task.task_id}")
        answer = await alice.wait_for(lambda f: f.get("in_reply_to") == cancel and f["type"] == "reply")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=10)
    assert answer["text"] == f"Cancelled task {task.task_id} before it started."
    assert result["ok"] is False and "cancelled by alice" in result["text"]
    await asyncio.sleep(4.5)  # past the retry's moment: it must not start
    final = await engine.tasks.get(task.task_id)
    assert final is not None and final.status == "cancelled" and final.attempt == 2 and final.start_time is None


async def test_a_waiting_retry_survives_a_restart_and_runs_when_due(retry_config: Config) -> None:
    async with running_engine(retry_config) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await alice.say("/slow-flaky 2")
        await alice.wait_for(lambda f: f["type"] == "progress" and "retrying in 4s" in f["detail"], timeout=30)
        waiting = await the_task(engine, "pending")
    assert waiting.attempt == 2 and waiting.not_before is not None

    async with running_engine(retry_config) as engine:
        done = await the_task(engine, "succeeded", timeout=30)
    assert done.task_id == waiting.task_id and done.attempt == 2
    assert done.start_time is not None and done.start_time >= waiting.not_before
