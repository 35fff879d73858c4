"""The task queue's retry bookkeeping on a real SQLite file: the doubling delay, a retry not claimed before its
moment, the last failure final, cancelled never retried, and a file from before retries existed still readable."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from engine.core.events import utcnow
from engine.core.store import Database
from engine.tasks import queue as tasks
from engine.tasks.queue import TaskParams, TaskQueue, TaskRecord, retry_delay_s


def test_the_delay_doubles_per_attempt_and_stops_at_an_hour() -> None:
    assert [retry_delay_s(10, attempt) for attempt in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay_s(1800, 2) == 3600 and retry_delay_s(1800, 9) == 3600


def a_task(retries: int, backoff_s: float) -> TaskRecord:
    return TaskRecord(platform="chat", command="/flaky", run_id="run-1", rule="r", event_id="ev-1",
                      params=TaskParams(script="flaky.sh", timeout=5, retries=retries, backoff_s=backoff_s))


def failed(task: TaskRecord, code: int = 1) -> TaskRecord:
    return task.model_copy(update={"status": "failed", "exit_code": code, "end_time": utcnow(), "output": "boom"})


@pytest.fixture
async def queue(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = Database(tmp_path)
    await db.open([tasks.SCHEMA, tasks.migrate])
    yield TaskQueue(db, on_change=lambda task: None)
    await db.close()


async def test_a_failed_attempt_waits_its_backoff_then_the_last_failure_is_final(queue: TaskQueue) -> None:
    await queue.enqueue(a_task(retries=1, backoff_s=0.4))
    first = await queue.claim()
    retry = await queue.settle(failed(first))
    assert retry.status == "pending" and retry.attempt == 2 and retry.exit_code is None and retry.output == ""
    assert retry.earlier == ["flaky.sh failed (exit code 1)"]
    assert retry.not_before is not None and 0.3 < (retry.not_before - utcnow()).total_seconds() <= 0.4
    assert await queue.pending() == []  # not due yet: a Redis publisher would not hand it out either

    started = time.time()
    second = await asyncio.wait_for(queue.claim(), 5)
    assert second.attempt == 2 and time.time() >= retry.not_before.timestamp() and time.time() - started < 3
    final = await queue.settle(failed(second, code=2))
    assert final.status == "failed" and final.exit_code == 2 and final.earlier == retry.earlier
    assert (await queue.get(final.task_id)) == final


async def test_timed_out_attempts_are_retried_but_cancelled_ones_are_not(queue: TaskQueue) -> None:
    await queue.enqueue(a_task(retries=3, backoff_s=0.01))
    claimed = await queue.claim()
    retry = await queue.settle(claimed.model_copy(update={"status": "timed_out", "end_time": utcnow()}))
    assert retry.status == "pending" and retry.attempt == 2
    claimed = await asyncio.wait_for(queue.claim(), 5)
    cancelled = await queue.settle(claimed.model_copy(update={"status": "cancelled", "error": "cancelled by bob"}))
    assert cancelled.status == "cancelled" and cancelled.attempt == 2


async def test_a_claimer_asleep_for_a_later_retry_takes_a_new_task_at_once(queue: TaskQueue) -> None:
    await queue.enqueue(a_task(retries=1, backoff_s=30))
    await queue.settle(failed(await queue.claim()))  # waits 30 s
    claimer = asyncio.ensure_future(queue.claim())
    await asyncio.sleep(0.1)
    fresh = a_task(retries=0, backoff_s=10)
    await queue.enqueue(fresh)
    assert (await asyncio.wait_for(claimer, 2)).task_id == fresh.task_id


async def test_a_file_from_before_retries_gets_the_column_and_its_tasks_still_run(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "herald.db")
    old.executescript("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, status TEXT NOT NULL, create_time TEXT NOT NULL,"
                      " body TEXT NOT NULL)")
    written = a_task(retries=0, backoff_s=10)
    body = written.model_dump_json(exclude={"attempt", "not_before", "earlier"})
    body = body.replace(',"retries":0,"backoff_s":10.0', "")
    assert "retries" not in body and "attempt" not in body
    old.execute("INSERT INTO tasks VALUES (?, 'pending', '2026-01-01T00:00:00+00:00', ?)", (written.task_id, body))
    old.commit()
    old.close()

    db = Database(tmp_path)
    await db.open([tasks.SCHEMA, tasks.migrate])
    try:
        task = await asyncio.wait_for(TaskQueue(db, on_change=lambda t: None).claim(), 5)
        assert task.task_id == written.task_id and task.attempt == 1 and task.params.retries == 0
        assert task.status == "running"
    finally:
        await db.close()
