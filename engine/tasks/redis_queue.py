"""Tasks over Redis Streams, for `herald worker` processes on other machines (issue: scale out).

SQLite stays the record of every task; Redis only carries work and results between the engine and the workers:

    engine --XADD herald:tasks--> consumer group "herald-workers" --XREADGROUP--> worker -> sandbox
    engine <--XREADGROUP "herald-engine"-- herald:results <--XADD (started, finished)-- worker

A task is published at most once (a `SET NX` guard in the same Lua call as the XADD), so re-publishing after an
engine restart is safe. A worker keeps the tasks it runs claimed (XCLAIM resets their idle time); a worker that dies
stops doing that, and another one takes its tasks over with XAUTOCLAIM once they are idle for `claim_idle_s`. The
engine records a task's result once: a second "finished" for a task already final is ignored, so a task taken
over from a dead worker still completes exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from engine.core.config import QueueConfig
from engine.tasks.queue import FINAL, TaskQueue, TaskRecord

log = logging.getLogger("herald.redis")
T = TypeVar("T")

WORKER_GROUP = "herald-workers"
ENGINE_GROUP = "herald-engine"
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'task', ARGV[1])
end
return false
"""


def _quiet(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an abandoned read's error is expected, not news


async def _abandonable(call: Awaitable[T]) -> T:
    """Await a redis-py call so that cancelling the caller takes effect at once. redis-py 5 can hold on to a
    cancelled blocking read (XREADGROUP ... BLOCK) until its connection closes, which hung the engine's stop; the
    read is left to end with the client instead."""
    inner = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.cancel()
        inner.add_done_callback(_quiet)
        raise


async def _ensure_group(client: aredis.Redis, stream: str, group: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RedisTaskBus:
    """The engine's side: publish tasks, consume results."""

    def __init__(self, config: QueueConfig) -> None:
        assert config.redis_url is not None
        self._config = config
        self._client = aredis.Redis.from_url(config.redis_url, decode_responses=True)
        self._publish_once = self._client.register_script(_PUBLISH_ONCE)

    async def start(self) -> None:
        await _ensure_group(self._client, self._config.tasks_stream, WORKER_GROUP)
        await _ensure_group(self._client, self._config.results_stream, ENGINE_GROUP)

    async def publish(self, task: TaskRecord) -> bool:
        """Hand a pending task to the workers, once; False when it had been handed over before."""
        added = await self._publish_once(
            keys=[f"herald:published:{task.task_id}:{task.attempt}", self._config.tasks_stream],
            args=[task.model_dump_json(), 7 * 24 * 3600],
        )
        return bool(added)

    async def results(self, on_result: Callable[[TaskRecord], Awaitable[None]]) -> None:
        """Feed every result the workers send to `on_result`, acknowledging each after it was handled."""
        consumer = f"engine-{socket.gethostname()}"
        stream = self._config.results_stream
        pending_first = True  # after a restart, first what this engine read but never acknowledged
        while True:
            response = await _abandonable(self._client.xreadgroup(
                ENGINE_GROUP, consumer, {stream: "0" if pending_first else ">"}, count=100, block=1000))
            entries = response[0][1] if response else []
            if pending_first and not entries:
                pending_first = False
                continue
            for message_id, fields in entries:
                await on_result(TaskRecord.model_validate_json(fields["task"]))
                await self._client.xack(stream, ENGINE_GROUP, message_id)

    async def close(self) -> None:
        await self._client.aclose()


class RedisWorker:
    """`herald worker`: take tasks from the stream, run them, send back what happened."""

    def __init__(self, config: QueueConfig, *, name: str,
                 run_task: Callable[[TaskRecord], Awaitable[TaskRecord]]) -> None:
        assert config.redis_url is not None
        self._config = config
        self.name = name
        self._run_task = run_task
        self._client = aredis.Redis.from_url(config.redis_url, decode_responses=True)

    async def run(self) -> None:
        stream = self._config.tasks_stream
        await _ensure_group(self._client, stream, WORKER_GROUP)
        await _ensure_group(self._client, self._config.results_stream, ENGINE_GROUP)
        log.info("worker %s consuming %s", self.name, stream)
        while True:
            for message_id, fields in await self._next():
                await self._handle(message_id, fields)

    async def _next(self) -> list[tuple[str, dict[str, str]]]:
        """Tasks a dead worker left idle first, then new ones."""
        idle_ms = int(self._config.claim_idle_s * 1000)
        _, claimed, _ = await self._client.xautoclaim(self._config.tasks_stream, WORKER_GROUP, self.name,
                                                      min_idle_time=idle_ms, start_id="0-0", count=1)
        if claimed:
            log.warning("worker %s took over task entry %s from a worker that stopped", self.name, claimed[0][0])
            return [(mid, f) for mid, f in claimed if f]
        response = await self._client.xreadgroup(WORKER_GROUP, self.name, {self._config.tasks_stream: ">"},
                                                 count=1, block=1000)
        return response[0][1] if response else []

    async def _handle(self, message_id: str, fields: dict[str, str]) -> None:
        task = TaskRecord.model_validate_json(fields["task"])
        started = task.model_copy(update={"status": "running", "worker": self.name})
        await self._send(started)
        keepalive = asyncio.ensure_future(self._keep_claimed(message_id))
        try:
            finished = await self._run_task(started)
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        await self._send(finished)
        await self._client.xack(self._config.tasks_stream, WORKER_GROUP, message_id)

    async def _keep_claimed(self, message_id: str) -> None:
        """Reset the entry's idle time while the task runs, so no other worker takes it over."""
        while True:
            await asyncio.sleep(self._config.claim_idle_s / 3)
            await self._client.xclaim(self._config.tasks_stream, WORKER_GROUP, self.name, min_idle_time=0,
                                      message_ids=[message_id], justid=True)

    async def _send(self, task: TaskRecord) -> None:
        await self._client.xadd(self._config.results_stream, {"task": task.model_dump_json()},
                                maxlen=100_000, approximate=True)

    async def close(self) -> None:
        await self._client.aclose()


class RemoteTasks:
    """The engine's dispatcher when tasks run in `herald worker` processes: publish what is pending, record results.

    A result is recorded once: "running" only moves a pending task on, and a "finished" for a task that is already
    final (a task a second worker took over from one that died, or a result delivered again after a restart) is
    ignored, so each task finishes exactly once and `on_finished` runs once for it. A retry is a new attempt of
    the same task: it is published again (the guard is per attempt), and results of an earlier attempt are ignored.
    """

    def __init__(self, bus: RedisTaskBus, queue: TaskQueue,
                 on_finished: Callable[[TaskRecord], Awaitable[None]]) -> None:
        self._bus = bus
        self._queue = queue
        self._on_finished = on_finished

    async def publish_pending(self) -> None:
        while True:
            for task in await self._queue.pending():
                await self._bus.publish(task)
            await self._queue.wait_enqueued(timeout_s=5.0)

    async def record_results(self) -> None:
        await self._bus.results(self._record)

    async def _record(self, result: TaskRecord) -> None:
        current = await self._queue.get(result.task_id)
        if current is None or current.status in FINAL or current.attempt != result.attempt:
            if current is not None and result.status in FINAL:
                log.info("task %s attempt %d already finished; ignoring a second result from %s", result.task_id,
                         result.attempt, result.worker)
            return
        if result.status == "running":
            if current.status == "pending":
                await self._queue.update(result)
            return
        await self._on_finished(await self._queue.settle(result))
