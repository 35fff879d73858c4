"""The Redis queue trusts only what Herald signed (issue 18 item 2), on a real redis-server with a password and an ACL
user, with `herald worker` processes: a hand-made or altered task entry is never run and is audited; a result that
is unsigned, or signed but not from the worker holding the task, is refused and audited, and the requester gets
only the real result."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from engine.core.config import load_config
from engine.core.events import utcnow
from engine.server.app import Engine
from engine.tasks.record import TaskParams, TaskRecord
from engine.tasks.signing import EntrySigner
from engine.testing import ChatClient, running_engine
from tests.e2e.redis_server import (
    ACL_PASSWORD,
    ACL_USER,
    SIGNING_KEY,
    W1,
    RedisServer,
    add_work_rule,
    herald,
    queue_section,
    wait_for_line,
)
from tests.support import ALICE_TOKEN, chat_url

TASKS, RESULTS = "herald:tasks", "herald:results"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", acl_user=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def queue_config(config_file: Path, rules_dir: Path, server: RedisServer) -> Path:
    add_work_rule(rules_dir, sleep_s=4)
    url = server.url(user=ACL_USER, password=ACL_PASSWORD)
    config_file.write_text(config_file.read_text() + queue_section(url, claim_idle_s=2))
    return config_file


@pytest.fixture
async def engine(queue_config: Path) -> AsyncIterator[Engine]:
    async with running_engine(load_config(queue_config)) as engine:
        yield engine


@pytest.fixture
def worker(queue_config: Path) -> Iterator[Path]:
    """One `herald worker` named W1; yields its log."""
    log = queue_config.parent / "w1.log"
    process = herald(queue_config, "worker", "--name", W1, log=log)
    try:
        wait_for_line(log, f"herald worker {W1} ready", process)
        yield log
        assert process.poll() is None, "the worker died"
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
async def attacker(server: RedisServer) -> AsyncIterator[aredis.Redis]:
    """Someone who can write to Redis (here with Herald's own Redis credentials), but has no signing key."""
    client = aredis.Redis.from_url(server.url(user=ACL_USER, password=ACL_PASSWORD), decode_responses=True)
    yield client
    await client.aclose()


async def _refusals(engine: Engine, stream: str) -> list[dict[str, Any]]:
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT data FROM audit_log WHERE action = 'queue.refused' ORDER BY seq").fetchall())
    return [data for data in (json.loads(row["data"]) for row in rows) if data["stream"] == stream]


async def _until(predicate: Any, timeout_s: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


def _hand_made(task_id: str) -> TaskRecord:
    """What the attacker of issue 18 queued: network on, 1 GiB."""
    return TaskRecord(task_id=task_id, platform="chat", command="/work pwned", run_id="r", rule="r", event_id="e",
                      params=TaskParams(script="work.sh", args=[task_id], timeout=60, memory_bytes=1 << 30,
                                        network="default"))


async def test_a_hand_made_or_altered_task_entry_is_never_run_and_is_audited(
        engine: Engine, worker: Path, attacker: aredis.Redis) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        first = await alice.say("/work genuine")
        await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == first, timeout=60)
        (_, genuine), = await attacker.xrange(TASKS)
        altered = TaskRecord.model_validate_json(genuine["task"]).model_copy(
            update={"task_id": "forged-altered", "params": _hand_made("x").params})
        forged = {
            await attacker.xadd(TASKS, {"task": _hand_made("forged-unsigned").model_dump_json()}): "no signature",
            await attacker.xadd(TASKS, {"task": _hand_made("forged-badsig").model_dump_json(), "sig": "ab" * 32}):
                "a wrong signature",
            await attacker.xadd(TASKS, {"task": altered.model_dump_json(), "sig": genuine["sig"]}):
                "a wrong signature",
        }
        after = await alice.say("/work after")  # the worker is still there, past the forged entries
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == after, timeout=60)
        assert result["ok"] and "done after" in result["output"]

    refused = await _until(lambda: _refusals(engine, TASKS))
    assert {r["entry"]: r["reason"].split(" (")[0] for r in refused} == forged
    results = [json.loads(fields["task"]) for _, fields in await attacker.xrange(RESULTS)]
    assert {r["params"]["args"][0] for r in results} == {"genuine", "after"}  # the forged ones never started
    assert {t.task_id for t in await engine.tasks.recent(50)}.isdisjoint({"forged-unsigned", "forged-badsig",
                                                                          "forged-altered"})
    assert (await attacker.xpending(TASKS, "herald-workers"))["pending"] == 0  # dropped, not left to retry
    log = worker.read_text()
    assert log.count("refused task entry") == 3
    audit = json.dumps(await engine.db.call(lambda c: [tuple(r) for r in c.execute("SELECT * FROM audit_log")]))
    for secret in (SIGNING_KEY, ACL_PASSWORD):
        assert secret not in log and secret not in audit


async def test_a_result_not_from_the_worker_holding_the_task_is_refused(
        engine: Engine, worker: Path, attacker: aredis.Redis) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/work victim")

        async def running() -> TaskRecord | None:
            return next((t for t in await engine.tasks.recent(10) if t.status == "running"), None)

        task = await _until(running)
        assert task.worker == W1 and task.queue_entry is not None
        lie = task.model_copy(update={"status": "succeeded", "exit_code": 0, "output": "all fine, trust me",
                                      "end_time": utcnow()})
        signer = EntrySigner(SIGNING_KEY.encode())  # a worker that has the key but does not hold the task
        other = lie.model_copy(update={"worker": "w-other"})
        steal = task.model_copy(update={"worker": "w-other"})  # a claim on the same delivery of the entry
        lies = {
            await attacker.xadd(RESULTS, {"task": lie.model_dump_json(), "worker": W1}): "no signature",
            await attacker.xadd(RESULTS, signer.result_fields(RESULTS, steal)): "a claim on task",
            await attacker.xadd(RESULTS, signer.result_fields(RESULTS, other)): "a result for task",
        }
        refused = await _until(lambda: _refusals(engine, RESULTS))
        assert (await engine.tasks.get(task.task_id)).status == "running"  # type: ignore[union-attr]
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=60)
        await asyncio.sleep(1)  # room for a second result, if one were let through
    assert result["ok"] and "done victim" in result["output"] and "trust me" not in json.dumps(alice.frames)
    assert [f for f in alice.frames if f["type"] == "result"] == [result]
    refused = await _refusals(engine, RESULTS)
    assert {r["entry"]: r["reason"] for r in refused}.keys() == lies.keys()
    for entry, start in lies.items():
        assert next(r["reason"] for r in refused if r["entry"] == entry).startswith(start)
    assert f"{W1} holds it" in next(r["reason"] for r in refused if r["reason"].startswith("a result for task"))
    finished = await engine.tasks.get(task.task_id)
    assert finished is not None and finished.status == "succeeded" and finished.worker == W1


def _refusal(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a herald command that must refuse to start: its exit code is 1 and its last line says why."""
    log = config.parent / f"{args[0]}-refused.log"
    process = herald(config, *args, log=log, env=env)
    try:
        assert process.wait(60) == 1, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    return log.read_text().strip().splitlines()[-1]


def test_engine_and_worker_refuse_a_redis_anyone_may_use_unless_allowed(tmp_path: Path, config_file: Path,
                                                                       rules_dir: Path) -> None:
    server = RedisServer(tmp_path / "open-redis", password=None).start()
    try:
        base = config_file.read_text()
        config_file.write_text(base + queue_section(server.url()))
        for command in ("worker", "run"):
            line = _refusal(config_file, command)
            assert "lets clients in without a password" in line and "allow_unauthenticated = true" in line, line
        config_file.write_text(base + queue_section(server.url(), allow_unauthenticated=True))
        log = tmp_path / "allowed.log"
        process = herald(config_file, "worker", "--name", W1, log=log)
        try:
            wait_for_line(log, f"herald worker {W1} ready", process)
        finally:
            process.terminate()
            assert process.wait(20) == 0
    finally:
        server.stop()


def test_wrong_credentials_and_an_untrusted_certificate_refuse_to_start(tmp_path: Path, config_file: Path) -> None:
    from tests.e2e.redis_server import make_tls_files

    server = RedisServer(tmp_path / "tls-redis", tls=make_tls_files(tmp_path)).start()
    try:
        base = config_file.read_text()
        config_file.write_text(base + queue_section(server.url(), redis_password_env="TEST_REDIS_PASSWORD",
                                                    tls_ca_file=str(server.tls[0])))  # type: ignore[index]
        line = _refusal(config_file, "worker", env={"TEST_REDIS_PASSWORD": "not-the-password-0123"})
        assert "refused Herald's credentials" in line and "not-the-password" not in line, line
        config_file.write_text(base + queue_section(server.url(), redis_password_env="TEST_REDIS_PASSWORD"))
        line = _refusal(config_file, "worker", env={"TEST_REDIS_PASSWORD": server.password or ""})
        assert "TLS certificate is not trusted" in line and "tls_ca_file" in line, line
    finally:
        server.stop()


async def test_tasks_run_over_tls_with_the_password_from_the_environment(
        tmp_path: Path, config_file: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e.redis_server import make_tls_files

    server = await asyncio.to_thread(RedisServer(tmp_path / "tls-redis", tls=make_tls_files(tmp_path)).start)
    add_work_rule(rules_dir, sleep_s=0)
    config_file.write_text(config_file.read_text() + queue_section(
        server.url(), redis_password_env="TEST_REDIS_PASSWORD", tls_ca_file=str(server.tls[0])))  # type: ignore[index]
    monkeypatch.setenv("TEST_REDIS_PASSWORD", server.password or "")
    log = tmp_path / "w1.log"
    process = None
    try:
        async with running_engine(load_config(config_file)) as engine:  # first: it starts the Podman service
            process = herald(config_file, "worker", "--name", W1, log=log)
            async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
                msg = await alice.say("/work tls")
                result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, 60)
        assert result["ok"] and "done tls" in result["output"]
        plain = await asyncio.to_thread(subprocess.run, ["redis-cli", "-p", str(server.port), "ping"],
                                        capture_output=True, text=True)
        assert "PONG" not in plain.stdout  # the server really speaks only TLS
    finally:
        if process is not None:
            process.terminate()
            await asyncio.to_thread(process.wait, 20)
        await asyncio.to_thread(server.stop)
    assert server.password not in log.read_text()  # type: ignore[operator]
