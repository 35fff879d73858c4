"""Tasks over Redis Streams, for `herald worker` processes on other machines (issue: scale out); the engine's side.

SQLite stays the record of every task; Redis only carries work and results between the engine and the workers:

    engine --XADD herald:tasks--> consumer group "herald-workers" --XREADGROUP--> worker -> sandbox
    engine <--XREADGROUP "herald-engine"-- herald:results <--XADD (started, finished)-- worker

Trust: every entry is signed (engine.tasks.signing). Workers drop a task entry that is unsigned or altered; the
engine watches the task stream too (its own consumer group on it) and audits such an entry (`queue.refused`), and
refuses and audits a result that is unsigned, altered, or from a worker that does not hold the task. A worker
holds a task from the moment the engine accepts its signed "running" (its name, the stream entry and the entry's
delivery count); only a later delivery of the same entry (a takeover from a worker that stopped) moves it to
another worker, and only the holder's "finished" is recorded. The engine takes from a result only what a worker
may report (status, times, exit code, output, ...), never where the answer goes or what was asked.

Delivery: a task is published at most once per attempt (a `SET NX` guard in the same Lua call as the XADD), so
re-publishing after an engine restart is safe. A worker keeps the tasks it runs claimed; a worker that dies stops
doing that, and another one takes its tasks over once they are idle for `claim_idle_s` (engine.tasks.redis_worker).
The engine records a task's result once: a second "finished" for a task already final is ignored.

Outages (engine.tasks.redis_link): the publisher and the readers retry with backoff and resume by themselves; the
tasks table is the source of truth, so what was queued meanwhile is published when Redis is back, and a reader
re-reads what it had not acknowledged.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from engine.core.config import QueueConfig
from engine.core.errors import EntryRefused
from engine.tasks.queue import FINAL, TaskQueue, TaskRecord
from engine.tasks.redis_link import BLOCK_MS, Link
from engine.tasks.signing import EntrySigner, load_key

log = logging.getLogger("herald.redis")

WORKER_GROUP = "herald-workers"
ENGINE_GROUP = "herald-engine"
GUARD_TTL_S = 7 * 24 * 3600
# What the engine takes from a worker's result; everything else (who asked, where the answer goes, what runs) is
# the engine's own record.
WORKER_REPORTS = ("status", "start_time", "end_time", "exit_code", "output", "error", "enforced", "output_bytes",
                  "limits_note", "worker", "queue_entry", "queue_delivery")
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'task', ARGV[1], 'sig', ARGV[2])
end
return false
"""
Audit = Callable[..., Awaitable[None]]  # (action, actor, **data)


async def ensure_groups(client: aredis.Redis, config: QueueConfig) -> None:
    """The consumer groups on both streams (and the streams), from their first entry; there already is fine."""
    for stream, group in ((config.tasks_stream, WORKER_GROUP), (config.results_stream, ENGINE_GROUP),
                          (config.tasks_stream, ENGINE_GROUP)):
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class RedisTaskBus:
    """The engine's side of the streams: publish signed tasks, and read a stream's entries as its consumer group."""

    def __init__(self, config: QueueConfig, link: Link, signer: EntrySigner) -> None:
        self._config = config
        self._link = link
        self._signer = signer
        self._client = link.client
        self._publish_once = self._client.register_script(_PUBLISH_ONCE)
        self._consumer = f"engine-{socket.gethostname()}"

    async def ensure_groups(self) -> None:
        await self._link.call(functools.partial(ensure_groups, self._client, self._config))

    async def publish(self, task: TaskRecord) -> bool:
        """Hand a pending task to the workers, once; False when it had been handed over before. Waits through an
        outage."""
        fields = self._signer.task_fields(self._config.tasks_stream, task)
        added = await self._link.call(functools.partial(
            self._publish_once, keys=[f"herald:published:{task.task_id}:{task.attempt}", self._config.tasks_stream],
            args=[fields["task"], fields["sig"], GUARD_TTL_S]))
        return bool(added)

    async def _read_once(self, stream: str, start: str) -> Any:
        return await self._client.xreadgroup(ENGINE_GROUP, self._consumer, {stream: start}, count=100,
                                             block=BLOCK_MS)

    async def read(self, stream: str, handle: Callable[[str, dict[str, str]], Awaitable[None]]) -> None:
        """Feed every entry of `stream` to `handle(entry_id, fields)`, acknowledging each after it was handled.
        After a start or an outage, first what this engine read but never acknowledged."""
        seen_outages = -1
        pending_first = True
        while True:
            if self._link.outages != seen_outages:
                seen_outages, pending_first = self._link.outages, True
            response = await self._link.call(
                functools.partial(self._read_once, stream, "0" if pending_first else ">"), repair=self.ensure_groups)
            entries = response[0][1] if response else []
            if pending_first and not entries:
                pending_first = False
                continue
            for entry_id, fields in entries:
                if fields:  # an entry deleted while pending comes back without fields
                    await handle(entry_id, fields)
                await self._link.call(functools.partial(self._client.xack, stream, ENGINE_GROUP, entry_id))


class RemoteTasks:
    """The engine's dispatcher when tasks run in `herald worker` processes: publish what is pending, record results,
    refuse and audit what Herald did not write.

    A result is recorded once: a "finished" for a task that is already final (a result delivered again after a
    restart, or by a worker that lost the task to another) is ignored, so each task finishes exactly once and
    `on_finished` runs once for it. A retry is a new attempt of the same task: it is published again (the guard is
    per attempt), and results of an earlier attempt are ignored.
    """

    def __init__(self, config: QueueConfig, queue: TaskQueue, on_finished: Callable[[TaskRecord], Awaitable[None]],
                 audit: Audit) -> None:
        self._config = config
        self._queue = queue
        self._on_finished = on_finished
        self._audit = audit
        self._signer = EntrySigner(load_key(config))  # QueueError when there is none: the engine does not start
        self.link = Link(config, on_change=self._changed)
        self._bus = RedisTaskBus(config, self.link, self._signer)

    def _changed(self, problem: str | None) -> None:
        self._queue.outage = problem

    async def start(self) -> None:
        """Refuse (QueueError) a Redis that lets anyone in or refuses Herald; an outage is reported, not fatal."""
        await self.link.start()

    def loops(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The background loops to run (and cancel on stop), by name. They wait out outages; one that ends with
        an error (a bug) leaves the queue reported as unavailable rather than silently stopped."""
        loops = {"task-publisher": self.publish_pending, "task-results": self.record_results,
                 "task-stream-watch": self.watch_tasks}
        return {name: functools.partial(self._reported, name, loop) for name, loop in loops.items()}

    async def _reported(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await loop()
        except Exception as exc:
            self._queue.outage = f"the task queue's {name} loop stopped: {type(exc).__name__}"
            raise

    async def close(self) -> None:
        await self.link.close()

    async def publish_pending(self) -> None:
        await self._bus.ensure_groups()
        while True:
            for task in await self._queue.pending():
                await self._bus.publish(task)
            await self._queue.wait_enqueued(timeout_s=5.0)

    async def record_results(self) -> None:
        await self._bus.ensure_groups()
        await self._bus.read(self._config.results_stream, self._result_entry)

    async def watch_tasks(self) -> None:
        """Read the task stream as well (the engine's own group on it): a task entry Herald did not sign is
        audited here, while every worker drops it."""
        await self._bus.ensure_groups()
        await self._bus.read(self._config.tasks_stream, self._task_entry)

    async def _task_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            self._signer.read_task(self._config.tasks_stream, fields)
        except EntryRefused as exc:
            await self._refuse(self._config.tasks_stream, entry_id, str(exc), fields)

    async def _result_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            result = self._signer.read_result(self._config.results_stream, fields)
            await self._record(result)
        except EntryRefused as exc:
            await self._refuse(self._config.results_stream, entry_id, str(exc), fields)

    async def _refuse(self, stream: str, entry_id: str, reason: str, fields: dict[str, str]) -> None:
        claimed = {key: str(fields.get(key, ""))[:80] for key in ("worker",) if fields.get(key)}
        log.warning("refused entry %s of %s: %s", entry_id, stream, reason)
        await self._audit("queue.refused", "redis", stream=stream, entry=entry_id, reason=reason, **claimed)

    async def _record(self, result: TaskRecord) -> None:
        """Record a verified result if its worker holds the task (see the module docstring); EntryRefused if not."""
        current = await self._queue.get(result.task_id)
        if current is None:
            raise EntryRefused(f"a result for task {result.task_id[:40]!r}, which Herald never queued")
        if result.status == "pending":
            raise EntryRefused(f"a result for task {current.task_id} that says 'pending'")
        if current.attempt != result.attempt:
            log.info("task %s: ignoring a result of attempt %d from %s (now at attempt %d)", current.task_id,
                     result.attempt, result.worker, current.attempt)
            return
        if current.status in FINAL:
            if result.status == "running" and current.queue_entry and result.queue_entry != current.queue_entry:
                raise EntryRefused(f"a claim on entry {result.queue_entry} by {result.worker} for task "
                                   f"{current.task_id}, which ran from entry {current.queue_entry} (a copied entry?)")
            if result.status in FINAL:
                log.info("task %s attempt %d already finished; ignoring a second result from %s", result.task_id,
                         result.attempt, result.worker)
            return
        reported = current.model_copy(update={name: getattr(result, name) for name in WORKER_REPORTS})
        if result.status == "running":
            if current.status == "pending":
                await self._queue.update(reported)
            elif not self._holds(current, result):
                if result.queue_entry != current.queue_entry or (result.queue_delivery or 0) <= (
                        current.queue_delivery or 0):
                    raise EntryRefused(f"a claim on task {current.task_id} by {result.worker} (entry "
                                       f"{result.queue_entry}, delivery {result.queue_delivery}), which "
                                       f"{current.worker} holds (entry {current.queue_entry}, delivery "
                                       f"{current.queue_delivery})")
                log.warning("task %s taken over by %s from %s", current.task_id, result.worker, current.worker)
                await self._queue.update(reported)
            return
        if current.status != "running" or not self._holds(current, result):
            holder = f"{current.worker} holds it" if current.status == "running" else "no worker has claimed it"
            raise EntryRefused(f"a result for task {current.task_id} from {result.worker}, but {holder}")
        settled = await self._queue.settle(reported)
        await self._on_finished(settled)
        self._queue.reported(settled.task_id)

    @staticmethod
    def _holds(current: TaskRecord, result: TaskRecord) -> bool:
        return current.worker == result.worker and current.queue_entry == result.queue_entry
