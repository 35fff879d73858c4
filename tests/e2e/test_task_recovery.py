"""Tasks a crash left running, with real processes, real rootless Podman and the real SQLite file: a container that
kept running through `kill -9` of the engine is adopted, and its real result is the task's (once, not retried); a task
whose container never started runs after the restart instead of being reported failed; a task whose result is lost
is reported so and not run again; leftover containers of this engine are removed at start, other owners' are not.

Runs are counted from Podman's own `start` events for the task's label, so a second run cannot hide.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from podman import PodmanClient

from engine.core.config import Config
from engine.core.events import ReplyTo, utcnow
from engine.core.store import DB_NAME
from engine.sandbox.policy import DEFAULT_IMAGE
from engine.tasks.queue import FINAL, TaskParams, TaskRecord
from engine.testing import ChatClient, running_engine
from tests.e2e.test_crash import Herald
from tests.engine.conftest import podman_url  # noqa: F401  (fixture: the sandbox user's real Podman service)
from tests.support import ALICE_TOKEN, chat_url, free_port

SLOW = '#!/bin/sh\necho "started attempt $HERALD_ATTEMPT"\nsleep 5\necho "slow done"\n'
ONCE = '#!/bin/sh\necho "ran attempt $HERALD_ATTEMPT of $HERALD_TASK_ID"\n'
# `retry`: the old recovery failed an interrupted task, and a retrying rule then ran it a second time.
RULES = """\
on command slow require role admin run slow.sh retry 2 times backoff 1s
on command once require role admin run once.sh retry 2 times backoff 1s
"""


@pytest.fixture
def podman(podman_url: str) -> Iterator[PodmanClient]:  # noqa: F811
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        yield client


@pytest.fixture
def recovery_config(config: Config, config_file: Path) -> Config:
    (config.rules_dir / "recovery.rules").write_text(RULES)
    for name, body in (("slow.sh", SLOW), ("once.sh", ONCE)):
        (config.scripts_dir / name).write_text(body)
        os.chmod(config.scripts_dir / name, 0o755)
    return config


@pytest.fixture
def made(podman: PodmanClient) -> Iterator[list[str]]:
    """Containers a test made or found; whatever is left of them is removed after it, so a failure leaks none."""
    ids: list[str] = []
    yield ids
    for container_id in ids:
        try:
            podman.containers.get(container_id).kill(signal="SIGKILL")
        except Exception:  # noqa: BLE001  (gone, or not running)
            pass
        try:
            podman.containers.remove(container_id, force=True)
        except Exception:  # noqa: BLE001
            pass


def make_container(podman: PodmanClient, labels: dict[str, str], *, start: bool) -> str:
    spec: dict[str, Any] = {"image": DEFAULT_IMAGE, "command": ["/bin/sh", "-c", "echo stray; sleep 300"],
                            "netns": {"nsmode": "none"}, "labels": {"app": "herald", **labels}}
    response = podman.api.post("/containers/create", data=json.dumps(spec),
                               headers={"content-type": "application/json"})
    response.raise_for_status()
    container_id: str = response.json()["Id"]
    if start:
        podman.containers.get(container_id).start()
    return container_id


def starts(podman: PodmanClient, task_id: str, since: float) -> int:
    """How many containers Podman started for this task since `since`: how often its script ran. Not through
    podman-py's `events()`, which always streams and needs `until` to end: Podman 4.3 stops reading its event log when
    `until` passes, and a log of some megabytes is not read to the end within a second."""
    response = podman.api.get("/events", params={
        "since": str(int(since) - 1), "stream": "false",
        "filters": json.dumps({"label": [f"herald.task={task_id}"], "event": ["start"]})})
    response.raise_for_status()
    return sum(1 for line in response.text.splitlines() if line.strip())


def task_containers(podman: PodmanClient, task_id: str) -> list[Any]:
    return list(podman.containers.list(all=True, filters=[f"label=herald.task={task_id}"]))


def read_tasks(db_path: Path) -> list[TaskRecord]:
    with sqlite3.connect(db_path) as db:
        return [TaskRecord.model_validate_json(body) for (body,) in db.execute("SELECT body FROM tasks")]


def audit_of(db_path: Path, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT action, data FROM audit_log ORDER BY seq").fetchall()
    return [(action, data) for action, data in ((a, json.loads(d)) for a, d in rows) if data.get("task") == task_id]


def traces_of(db_path: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [" ".join(str(value) for value in row) for row in
                db.execute("SELECT * FROM run_trace WHERE run_id = ?", (run_id,)).fetchall()]


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def send_command(port: int, text: str) -> None:
    """As alice, in Herald's chat: send `text` and return once Herald acknowledged it (it is journaled)."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as ws:
        await ws.send(json.dumps({"type": "auth", "token": ALICE_TOKEN}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "id": "m1", "text": text}))
        while json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] != "ack":
            pass


async def test_a_task_running_at_kill_9_is_adopted_and_runs_once(
    recovery_config: Config, config_file: Path, podman: PodmanClient, made: list[str]
) -> None:
    db_path = recovery_config.data_dir / DB_NAME
    herald = Herald(config_file, free_port())
    since = time.time()
    try:
        await herald.start()
        await send_command(herald.port, "/slow")

        def started_task() -> TaskRecord | None:
            tasks = [t for t in read_tasks(db_path) if t.params.script == "slow.sh" and t.container]
            if not tasks:
                return None
            found = task_containers(podman, tasks[0].task_id)
            made.extend(c.id for c in found if c.id not in made)
            return tasks[0] if any(c.attrs.get("State") == "running" for c in found) else None

        task = await wait_for(started_task, 30, "the task's container to run")
        herald.kill()  # while the script sleeps
        [ctr] = await asyncio.to_thread(task_containers, podman, task.task_id)
        assert ctr.attrs["State"] == "running", "the container should outlive the engine"

        await herald.start()

        def finished() -> TaskRecord | None:
            [now] = [t for t in read_tasks(db_path) if t.task_id == task.task_id]
            return now if now.status in FINAL else None

        done = await wait_for(finished, 60, "the adopted task to finish")
        await wait_for(lambda: "task.finished" in dict(audit_of(db_path, task.task_id)), 10, "the result's report")
    finally:
        herald.stop()

    assert done.status == "succeeded", (done.status, done.error)
    assert (done.exit_code, done.output) == (0, "started attempt 1\nslow done\n")
    assert (done.attempt, done.earlier, done.error) == (1, [], None)
    assert done.enforced, "what the sandbox enforced is kept from the start of the run"
    assert await asyncio.to_thread(starts, podman, task.task_id, since) == 1, "the script ran more than once"
    assert await asyncio.to_thread(task_containers, podman, task.task_id) == [], "its container was not removed"
    audit = audit_of(db_path, task.task_id)
    assert [action for action, _ in audit].count("task.finished") == 1 and "task.retry" not in dict(audit)
    assert dict(audit)["task.finished"]["status"] == "succeeded"
    assert any("slow.sh succeeded (exit code 0)" in line for line in traces_of(db_path, task.run_id)), \
        "the result was not reported to the run that asked for it"


def _running_task(task_id: str, *, container: str | None) -> TaskRecord:
    return TaskRecord(
        task_id=task_id, platform="chat", command="/once", status="running",
        params=TaskParams(script="once.sh", timeout=60, retries=2, backoff_s=1),
        create_time=utcnow() - timedelta(seconds=30), start_time=utcnow() - timedelta(seconds=20),
        run_id=f"run-{task_id}", rule="recovery.rules:2", event_id=f"event-{task_id}", requested_by="alice",
        container=container,
    )


async def test_at_start_unstarted_tasks_run_lost_ones_fail_and_leftovers_go(
    recovery_config: Config, podman: PodmanClient, made: list[str]
) -> None:
    async with running_engine(recovery_config) as engine:  # makes the database; learns this engine's owner
        owner = engine.sandbox.owner
    assert owner
    tag = uuid.uuid4().hex[:8]
    never, unstarted, lost = f"never-{tag}", f"unstarted-{tag}", f"lost-{tag}"

    def leave_a_crash_behind() -> dict[str, str]:
        """What a kill -9 can leave: tasks marked running, containers in any state (see engine/tasks/recovery.py)."""
        ids = {
            "unstarted": make_container(podman, {"herald.owner": owner, "herald.task": unstarted,
                                                 "herald.attempt": "1"}, start=False),
            "stray": make_container(podman, {"herald.owner": owner, "herald.task": f"long-done-{tag}",
                                             "herald.attempt": "1"}, start=True),
            "other owner": make_container(podman, {"herald.owner": f"{owner}-elsewhere",
                                                   "herald.task": f"theirs-{tag}"}, start=True),
        }
        made.extend(ids.values())
        with sqlite3.connect(recovery_config.data_dir / DB_NAME) as db:
            for task in (_running_task(never, container=None),  # claimed; the engine died before creating one
                         _running_task(unstarted, container=ids["unstarted"]),  # died between create and start
                         _running_task(lost, container="0" * 64)):  # started, and its container is gone now
                db.execute("INSERT INTO tasks (task_id, status, create_time, body) VALUES (?, ?, ?, ?)",
                           (task.task_id, task.status, task.create_time.isoformat(), task.model_dump_json()))
        return ids

    since = time.time()
    ids = await asyncio.to_thread(leave_a_crash_behind)

    async with running_engine(recovery_config) as engine:
        async def final(task_id: str) -> TaskRecord:
            for _ in range(600):
                task = await engine.tasks.get(task_id)
                if task is not None and task.status in FINAL:
                    return task
                await asyncio.sleep(0.05)
            raise AssertionError(f"task {task_id} did not finish")

        ran_never, ran_unstarted, failed_lost = [await final(t) for t in (never, unstarted, lost)]
        await asyncio.sleep(2.5)  # past the rule's 1 s backoff: a retry of the lost task would be pending now
        still_lost = await engine.tasks.get(lost)

    for task, task_id in ((ran_never, never), (ran_unstarted, unstarted)):
        assert task.status == "succeeded", (task_id, task.status, task.error)
        assert (task.attempt, task.earlier, task.output) == (1, [], f"ran attempt 1 of {task_id}\n")
        assert await asyncio.to_thread(starts, podman, task_id, since) == 1
    assert failed_lost.status == "failed" and "its result is unknown; it is not run again" in (failed_lost.error or "")
    assert still_lost is not None and (still_lost.status, still_lost.attempt) == ("failed", 1)
    assert await asyncio.to_thread(starts, podman, lost, since) == 0

    assert not await asyncio.to_thread(podman.containers.exists, ids["unstarted"])
    assert not await asyncio.to_thread(podman.containers.exists, ids["stray"])
    other = await asyncio.to_thread(podman.containers.get, ids["other owner"])
    assert other.attrs["State"]["Status"] == "running", "another owner's container was touched"
    audit = audit_of(recovery_config.data_dir / DB_NAME, lost)
    assert [(action, data["status"]) for action, data in audit] == [("task.finished", "failed")]


async def test_a_result_stored_but_not_reported_before_a_crash_is_reported_at_start(recovery_config: Config) -> None:
    """`kill -9` after a task's result was stored and before it reached its run and its requester: the next start
    reports it (the crash test found one such result that never reached the person)."""
    async with running_engine(recovery_config):  # makes the database
        pass
    done = _running_task("stored-not-reported", container=None).model_copy(update={
        "status": "succeeded", "end_time": utcnow(), "exit_code": 0, "output": "ran before the crash\n",
        "reply_to": ReplyTo(platform="chat", chat="@alice", message_id="m-lost")})

    def leave_a_crash_behind() -> None:
        with sqlite3.connect(recovery_config.data_dir / DB_NAME) as db:
            db.execute("INSERT INTO tasks (task_id, status, create_time, body, unreported) VALUES (?, ?, ?, ?, 1)",
                       (done.task_id, done.status, done.create_time.isoformat(), done.model_dump_json()))

    await asyncio.to_thread(leave_a_crash_behind)
    async with running_engine(recovery_config) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, since=0) as alice:
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == "m-lost", timeout=30)
        assert result["ok"] and result["task"] == done.task_id and "ran before the crash" in result["output"]
        assert await engine.tasks.unreported() == []
    async with running_engine(recovery_config) as engine:  # reported once: a later start does not report it again
        rows = await engine.db.call(lambda conn: conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'task.finished'").fetchone()[0])
    assert rows == 1
