"""Scale-out on a real redis-server: `herald worker` processes take tasks from a Redis stream; when one is killed
mid-task, another takes the task over and adopts its container: the script runs once and its real result is
reported once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.core.config import load_config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.e2e.redis_server import ACL_PASSWORD, ACL_USER, SIGNING_KEY, W1, W2, RedisServer
from tests.support import ALICE_TOKEN, REPO, chat_url

SCRIPT = '#!/bin/sh\necho "start $1 in $(cat /etc/hostname)"\nsleep 4\necho "done $1"\n'
FLAKY = '#!/bin/sh\necho "attempt $HERALD_ATTEMPT"\n[ "$HERALD_ATTEMPT" -ge "$1" ]\n'  # succeeds from attempt $1


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", acl_user=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis: RedisServer) -> str:
    """A Redis that asks for a password, used through an ACL user that may touch herald:* keys only."""
    return redis.url(user=ACL_USER, password=ACL_PASSWORD)


@pytest.fixture
def queue_config(config_file: Path, rules_dir: Path, redis_url: str) -> Path:
    rule = ("on command work <n: word> require role admin run work.sh args \"{command.n}\"\n"
            "on command flaky <until: int> require role admin run flaky.sh args \"{command.until}\" "
            "retry 2 times backoff 1s\n")
    (rules_dir / "work.rules").write_text(rule)
    for name, text in (("work.sh", SCRIPT), ("flaky.sh", FLAKY)):
        script = rules_dir / "scripts" / name
        script.write_text(text)
        os.chmod(script, 0o755)
    config_file.write_text(config_file.read_text() + f'\n[queue]\nredis_url = "{redis_url}"\nclaim_idle_s = 2\n'
                                                     f'signing_key = "{SIGNING_KEY}"\n')
    return config_file


@pytest.fixture
async def engine(queue_config: Path) -> AsyncIterator[Engine]:
    async with running_engine(load_config(queue_config)) as engine:
        yield engine


def _worker(config: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--config", str(config), "--name", name],
                            cwd=config.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=open(config.parent / f"{name}.log", "wb"))  # noqa: SIM115


async def _started_container(redis: RedisServer, task_id: str, timeout: float = 30) -> str:
    """The container the worker recorded, before starting it, as the task's (attempt 1)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        record = redis.cli("GET", f"herald:tasks:started:{task_id}:1").strip()
        if record:
            return record.split("\t")[2]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no start was recorded for task {task_id}")


async def _task_of(engine: Engine, n: str, status: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for task in await engine.tasks.recent(50):
            if task.params.args == [n] and task.status == status:
                return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {n} never became {status}")


async def test_workers_share_tasks_and_a_killed_workers_task_completes_once(engine: Engine, queue_config: Path,
                                                                          redis: RedisServer) -> None:
    workers = {name: _worker(queue_config, name) for name in (W1, W2)}
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            msg = await alice.say("/work victim")
            running = await _task_of(engine, "victim", "running")
            assert running.worker in workers
            container = await _started_container(redis, running.task_id)
            await asyncio.sleep(1.5)  # recorded just before it starts: let the script start (it sleeps 4 s)
            workers.pop(running.worker).send_signal(signal.SIGKILL)  # dies mid-task; its container runs on
            survivor = next(iter(workers))
            result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
            others = [await alice.say(f"/work n{i}") for i in range(3)]
            for other in others:
                await alice.wait_for(lambda f, o=other: f["type"] == "result" and f["in_reply_to"] == o, timeout=60)
            await asyncio.sleep(2.5)  # time for a duplicate result to show up, if there were one
        finished = await _task_of(engine, "victim", "succeeded")
        assert result["ok"] and finished.worker == survivor and "done victim" in finished.output
        assert f"start victim in {container[:12]}" in finished.output, "the script ran again instead of adopted"
        assert [f for f in alice.frames if f["type"] == "result" and f["in_reply_to"] == msg] == [result]
        rows = await engine.db.call(lambda c: c.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'task.finished'").fetchone()[0])
        assert rows == 4  # the victim once, and the three others
    finally:
        for process in workers.values():
            process.terminate()
            process.wait(20)


async def test_a_worker_retries_a_failed_task_after_its_backoff(engine: Engine, queue_config: Path) -> None:
    worker = _worker(queue_config, W1)
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            msg = await alice.say("/flaky 3")
            result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=90)
        assert result["ok"] and result["text"] == "flaky.sh succeeded (exit code 0) on attempt 3 of 3"
        finished = await _task_of(engine, "3", "succeeded")
        assert finished.worker == W1 and finished.output.strip() == "attempt 3"
        assert finished.earlier == ["flaky.sh failed (exit code 1)"] * 2
        waits = await engine.db.call(lambda c: c.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'task.retry'").fetchone()[0])
        assert waits == 2
    finally:
        worker.terminate()
        worker.wait(20)


async def test_an_engine_restart_leaves_a_workers_running_task_to_it(queue_config: Path) -> None:
    """The engine stops while a worker runs a task: at its start it does not fail the task (a `retry` rule would then
    run it a second time); the worker's result is recorded and reaches the person who asked."""
    worker = _worker(queue_config, W1)
    try:
        async with running_engine(load_config(queue_config)) as engine:
            async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
                msg = await alice.say("/work across")
                await _task_of(engine, "across", "running")
                seen = max((int(f["seq"]) for f in alice.frames if "seq" in f), default=0)
        async with running_engine(load_config(queue_config)) as engine:
            finished = await _task_of(engine, "across", "succeeded")
            async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, since=seen) as alice:
                result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=30)
        assert "done across" in finished.output and result["ok"]
    finally:
        worker.terminate()
        worker.wait(20)
