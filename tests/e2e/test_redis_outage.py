"""A Redis outage does not stop the queue (issue 21 item 1), with real processes: `herald run`, two `herald worker`s
and a redis-server (append-only, fsync always) that is killed mid-run and started again on the same port and folder
~10 s later. Commands sent meanwhile are queued and the sender is told the queue is unavailable; /healthz and
/metrics say so; the outage is logged once; everyone resumes by themselves, every task runs once and each result
reaches its requester. A worker whose loop ends for another reason exits non-zero."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aredis

from engine.testing import ChatClient
from tests.e2e.redis_server import (
    ACL_PASSWORD,
    ACL_USER,
    W1,
    W2,
    RedisServer,
    add_work_rule,
    herald,
    queue_section,
    wait_for_line,
)
from tests.support import ALICE_TOKEN, free_port

OUTAGE_S = 10.0


async def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
    return await asyncio.to_thread(process.wait, 30)


@pytest.fixture(params=[True, False], ids=["appendonly", "no-persistence"])
async def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RedisServer]:
    """With `appendonly` the streams survive the restart; without persistence they are gone, and the engine
    publishes again what no worker had claimed (its tasks table is the record)."""
    server = RedisServer(tmp_path / "redis", acl_user=True, appendonly=request.param)
    server = await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def _health(session: aiohttp.ClientSession, base: str) -> tuple[int, str, str]:
    """(/healthz status, its 'status' field, the herald_queue_up line of /metrics)."""
    async with session.get(f"{base}/healthz") as response:
        status, body = response.status, await response.json()
    async with session.get(f"{base}/metrics") as response:
        up = next(line for line in (await response.text()).splitlines() if line.startswith("herald_queue_up "))
    return status, body["status"], up


async def _eventually(session: aiohttp.ClientSession, base: str, want: tuple[int, str, str]) -> None:
    for _ in range(100):
        if await _health(session, base) == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"health never became {want}: {await _health(session, base)}")


async def test_a_redis_outage_mid_run_is_ridden_out_and_every_task_runs_once(
        tmp_path: Path, config_file: Path, rules_dir: Path, redis_server: RedisServer) -> None:
    add_work_rule(rules_dir, sleep_s=3)
    url = redis_server.url(user=ACL_USER, password=ACL_PASSWORD)
    config_file.write_text(config_file.read_text() + queue_section(url, claim_idle_s=3, reconnect_max_s=1))
    port = free_port()
    base, logs = f"http://127.0.0.1:{port}", {name: tmp_path / f"{name}.log" for name in ("engine", W1, W2)}
    engine = herald(config_file, "run", "--port", str(port), "--no-watch", log=logs["engine"])
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # One after the other: processes on one host share the sandbox user's Podman service, and the first one
        # starts it (processes starting it at the same moment race for its socket).
        await asyncio.to_thread(wait_for_line, logs["engine"], "Herald is ready", engine)
        workers.update((name, herald(config_file, "worker", "--name", name, log=logs[name])) for name in (W1, W2))
        for name, process in workers.items():
            await asyncio.to_thread(wait_for_line, logs[name], f"herald worker {name} ready", process)
        async with aiohttp.ClientSession() as session, \
                ChatClient.connect(f"ws://127.0.0.1:{port}/chat", ALICE_TOKEN) as alice:
            assert await _health(session, base) == (200, "running", "herald_queue_up 1")
            before = [await alice.say(f"/work a{i}") for i in range(4)]
            await asyncio.sleep(1.5)  # two of them are running now, two wait in the stream
            down_at = asyncio.get_running_loop().time()
            await asyncio.to_thread(redis_server.kill)

            await _eventually(session, base, (503, "queue unavailable", "herald_queue_up 0"))
            during = [await alice.say(f"/work b{i}") for i in range(2)]
            for msg in during:
                await alice.wait_for(lambda f, m=msg: f["type"] == "progress" and f["in_reply_to"] == m
                                     and "the task queue is unavailable" in (f.get("detail") or ""), timeout=20)
            await asyncio.sleep(max(0.0, down_at + OUTAGE_S - asyncio.get_running_loop().time()))
            await asyncio.to_thread(redis_server.start)  # same port, same folder: the streams come back

            results = {}
            for msg in before + during:
                results[msg] = await alice.wait_for(
                    lambda f, m=msg: f["type"] == "result" and f["in_reply_to"] == m, timeout=90)
            await asyncio.sleep(3)  # room for a duplicate result, were there one
            await _eventually(session, base, (200, "running", "herald_queue_up 1"))
        for msg, result in results.items():
            assert result["ok"] and "done" in result["output"], result
            assert [f for f in alice.frames if f["type"] == "result" and f["in_reply_to"] == msg] == [result]
        assert engine.poll() is None and all(w.poll() is None for w in workers.values()), "a process died"
    finally:
        codes = [await _stop(process) for process in (*workers.values(), engine)]
    assert codes == [0, 0, 0]

    db = sqlite3.connect(config_file.parent / "data" / "herald.db")
    try:
        actions = Counter(row[0] for row in db.execute("SELECT action FROM audit_log"))
        statuses = Counter(row[0] for row in db.execute("SELECT status FROM tasks"))
        task_ids = {row[0] for row in db.execute("SELECT task_id FROM tasks")}
    finally:
        db.close()
    assert actions["task.finished"] == 6 and actions["queue.refused"] == 0 and statuses == {"succeeded": 6}
    # Each task ran once: the workers started each exactly once (they log every start) ...
    starts = Counter(re.findall(r"runs task (\S+) \(work\.sh", logs[W1].read_text() + logs[W2].read_text()))
    assert starts == dict.fromkeys(task_ids, 1)
    if redis_server.appendonly:  # ... and the results stream, kept through the restart, holds one claim and one
        client = aredis.Redis.from_url(url, decode_responses=True)  # result for each
        try:
            entries = [json.loads(fields["task"]) for _, fields in await client.xrange("herald:results")]
        finally:
            await client.aclose()
        claims = {(e["task_id"], e["worker"], e["queue_entry"], e["queue_delivery"]) for e in entries
                  if e["status"] == "running"}
        assert Counter(task_id for task_id, *_ in claims) == dict.fromkeys(task_ids, 1)
        assert Counter(e["task_id"] for e in entries if e["status"] != "running") == dict.fromkeys(task_ids, 1)

    # The outage is reported once by each process, when it begins and when it ends, not once per retry.
    for name, log in logs.items():
        text = log.read_text()
        assert text.count("task queue unavailable") == 1 and text.count("task queue back") == 1, (name, text[-3000:])
        assert "took over" not in text and ACL_PASSWORD not in text


@pytest.mark.parametrize("redis_server", [False], indirect=True)
async def test_a_worker_whose_loop_ends_exits_non_zero(tmp_path: Path, config_file: Path,
                                                      redis_server: RedisServer) -> None:
    config_file.write_text(config_file.read_text() + queue_section(
        redis_server.url(user=ACL_USER, password=ACL_PASSWORD)))
    log = tmp_path / "w1.log"
    worker = herald(config_file, "worker", "--name", W1, log=log)
    try:
        await asyncio.to_thread(wait_for_line, log, f"herald worker {W1} ready", worker)
        await asyncio.to_thread(redis_server.cli, "DEL", "herald:tasks")  # the stream is replaced by a string:
        await asyncio.to_thread(redis_server.cli, "SET", "herald:tasks", "not a stream")  # not an outage
        assert await asyncio.to_thread(worker.wait, 30) == 1
    finally:
        await _stop(worker)
    assert "worker-loop ended" in log.read_text() and "WRONGTYPE" in log.read_text()


async def test_engine_and_worker_started_before_redis_wait_for_it(tmp_path: Path, config_file: Path,
                                                                  rules_dir: Path) -> None:
    """A host where Herald comes up before Redis: both start, say the queue is unavailable, and work once it is up."""
    server = RedisServer(tmp_path / "redis")  # not started yet
    add_work_rule(rules_dir, sleep_s=0)
    config_file.write_text(config_file.read_text() + queue_section(server.url(password=server.password),
                                                                   reconnect_max_s=1))
    port = free_port()
    base, logs = f"http://127.0.0.1:{port}", {name: tmp_path / f"{name}.log" for name in ("engine", W1)}
    engine = herald(config_file, "run", "--port", str(port), "--no-watch", log=logs["engine"])
    worker = None
    try:
        await asyncio.to_thread(wait_for_line, logs["engine"], "Herald is ready", engine)
        worker = herald(config_file, "worker", "--name", W1, log=logs[W1])
        await asyncio.to_thread(wait_for_line, logs[W1], f"herald worker {W1} ready", worker)
        async with aiohttp.ClientSession() as session, \
                ChatClient.connect(f"ws://127.0.0.1:{port}/chat", ALICE_TOKEN) as alice:
            assert await _health(session, base) == (503, "queue unavailable", "herald_queue_up 0")
            msg = await alice.say("/work early")
            await alice.wait_for(lambda f: f["type"] == "progress" and f["in_reply_to"] == msg
                                 and "the task queue is unavailable" in (f.get("detail") or ""), timeout=20)
            await asyncio.to_thread(server.start)
            result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
            assert result["ok"] and "done early" in result["output"]
            await _eventually(session, base, (200, "running", "herald_queue_up 1"))
    finally:
        codes = [await _stop(process) for process in (worker, engine) if process is not None]
        await asyncio.to_thread(server.stop)
    assert codes == [0, 0]
    for log in logs.values():
        assert log.read_text().count("task queue unavailable") == 1
