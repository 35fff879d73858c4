"""A running script's output reaches the chat as it is printed (throttled), before the result, and the TUI's
task row follows it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from engine.client.remote import RemoteEngineClient
from engine.client.snapshots import Snapshot, TaskView
from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url, http_url

SCRIPT = """#!/bin/sh
for i in 1 2 3; do echo "step $i"; sleep 1; done
i=0; while [ $i -lt 50 ]; do echo "burst $i"; i=$((i+1)); done
sleep 1
echo done
"""


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    (config.rules_dir / "slow.rules").write_text("on command slow require role admin run slow.sh\n")
    script = config.scripts_dir / "slow.sh"
    script.write_text(SCRIPT)
    os.chmod(script, 0o755)
    async with running_engine(config) as engine:
        yield engine


async def test_output_streams_to_chat_before_the_result(engine: Engine) -> None:
    sub, unsubscribe = engine.bus.subscribe()
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            msg = await alice.say("/slow")
            result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
    finally:
        unsubscribe()
    frames = alice.replies_to(msg)
    outputs = [f for f in frames if f["type"] == "output"]
    streamed = [line for f in outputs for line in f["lines"]]
    assert result["ok"] and result["output"].splitlines()[-1] == "done"
    assert len(outputs) >= 3, "the output should arrive in several updates while the script runs"
    assert frames.index(outputs[0]) < frames.index(result)
    assert streamed[:3] == ["step 1", "step 2", "step 3"]
    assert any(line.startswith("[... ") and "more lines]" in line for line in streamed)  # the burst was throttled
    assert max(len(f["lines"]) for f in outputs) <= 21
    tails = []
    while not sub.queue.empty():
        update = sub.queue.get_nowait()
        if isinstance(update, TaskView) and update.status == "running" and update.output_tail:
            tails.append(update.output_tail)
    assert any("step 1" in tail for tail in tails)


QUICK = """#!/bin/sh
echo "one"
echo "two"
"""


async def test_a_finished_task_is_final_in_the_stream_snapshot_and_its_output_comes_before_the_result(
        engine: Engine) -> None:
    # A script that prints and exits at once: its lines are still buffered when the task finishes.
    script = engine.config.scripts_dir / "quick.sh"
    script.write_text(QUICK)
    os.chmod(script, 0o755)
    (engine.config.rules_dir / "quick.rules").write_text("on command quick require role admin run quick.sh\n")
    await engine.reload()
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/quick")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
        await asyncio.sleep(2.5)  # past the relay's next flush (one a second)
        with contextlib.suppress(TimeoutError):
            await alice.wait_for(lambda f: False, timeout=0.5)  # collect anything that came late
    frames = alice.replies_to(msg)
    outputs = [f for f in frames if f["type"] == "output"]
    assert result["ok"]
    assert outputs and [line for f in outputs for line in f["lines"]] == ["one", "two"]
    assert all(frames.index(f) < frames.index(result) for f in outputs), [f["type"] for f in frames]
    # A client connecting now (a freshly started TUI) sees the task as it ended, not as it was mid-run.
    client = RemoteEngineClient(http_url(engine), engine.api_token)
    try:
        snapshot = await anext(client.updates())
    finally:
        await client.close()
    assert isinstance(snapshot, Snapshot)
    task = next(t for t in snapshot.tasks if t.task_id == result["task"])
    assert task.status == "succeeded"
