"""`herald worker`'s side of the Redis queue: take signed tasks, run them, send back signed results, and ride out
Redis outages.

A task entry that is unsigned or altered is logged and dropped (acknowledged unrun); the engine audits it
(engine.tasks.redis_queue). A worker holds the entries it runs: before it starts one it checks that the consumer
group still lists the entry as its own, and while it runs it refreshes the claim (XCLAIM resets the idle time) in
the same Lua call that checks it, so a worker never takes back an entry another worker took over. A worker takes
over an entry left idle for `claim_idle_s` (its worker stopped), but only once it has itself been connected for
`claim_idle_s`: after an outage every entry looks idle, and the workers that hold them need that long to refresh
their claims. Results are retried through an outage until Redis has them; only then is the entry acknowledged.

A task must not run twice: before a task's container starts, its worker records in Redis on which machine it
starts (`<tasks stream>:started:<task>:<attempt>`). A worker that takes a task over adopts its container when it
is on its own machine (its exit code and output are the result), runs the task only when no start was recorded,
and otherwise reports it failed with its result unknown (engine.tasks.recovery.take_over).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.core.config import QueueConfig
from engine.core.errors import EntryRefused
from engine.core.events import utcnow
from engine.sandbox.runner import RunStart
from engine.tasks.record import TaskRecord
from engine.tasks.redis_link import BLOCK_MS, Link
from engine.tasks.redis_queue import WORKER_GROUP, ensure_groups
from engine.tasks.signing import EntrySigner

log = logging.getLogger("herald.worker")
STARTED_KEEP_S = 7 * 86400  # how long a record of where a task started is kept (far past any task's timeout)
RunTask = Callable[[TaskRecord, Callable[[RunStart], Awaitable[None]]], Awaitable[TaskRecord]]
TakeOver = Callable[[TaskRecord, str | None, str], Awaitable[TaskRecord | None]]

# KEYS[1] stream; ARGV group, entry, consumer, refresh (1/0). Returns the entry's delivery count when `consumer`
# holds it (refreshing the claim if asked), 0 when another consumer does, -1 when nobody does (acknowledged, or
# lost by a Redis restart without persistence).
_HOLD = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return -1 end
if p[1][2] ~= ARGV[3] then return 0 end
if ARGV[4] == '1' then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID') end
return p[1][4]
"""


class RedisWorker:
    """`herald worker`: take tasks from the stream, run them, send back what happened."""

    def __init__(self, config: QueueConfig, *, name: str, host: str, link: Link, signer: EntrySigner,
                 run_task: RunTask, take_over: TakeOver, cancel_task: Callable[[str, str], bool]) -> None:
        self._config = config
        self.name = name
        self.host = host
        self._take_over = take_over
        self._taken_over: set[str] = set()  # entries this worker took over from one that stopped
        self._link = link
        self._client = link.client
        self._signer = signer
        self._run_task = run_task
        self._cancel_task = cancel_task
        self._hold_script = self._client.register_script(_HOLD)
        self._lost: set[str] = set()  # task ids taken over by another worker while this one ran them

    async def _ensure_groups(self) -> None:
        await self._link.call(functools.partial(ensure_groups, self._client, self._config))

    async def run(self) -> None:
        """Consume tasks until cancelled; outages are waited out, anything else ends it (raises)."""
        await self._ensure_groups()
        log.info("worker %s consuming %s", self.name, self._config.tasks_stream)
        while True:
            for entry_id, fields in await self._link.call(self._next, repair=self._ensure_groups):
                await self._handle(entry_id, fields)

    async def _next(self) -> list[tuple[str, dict[str, str]]]:
        """Tasks a stopped worker left idle first (once this worker has been connected long enough), then new
        ones."""
        stream, idle_s = self._config.tasks_stream, self._config.claim_idle_s
        if time.monotonic() - self._link.up_since >= idle_s:
            _, claimed, _ = await self._client.xautoclaim(stream, WORKER_GROUP, self.name,
                                                          min_idle_time=int(idle_s * 1000), start_id="0-0", count=1)
            claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
            if claimed:
                log.warning("worker %s took over task entry %s from a worker that stopped", self.name,
                            claimed[0][0])
                self._taken_over.add(claimed[0][0])
                return claimed
        response: Any = await self._client.xreadgroup(WORKER_GROUP, self.name, {stream: ">"}, count=1,
                                                      block=BLOCK_MS)
        return response[0][1] if response else []

    async def _hold(self, entry_id: str, *, refresh: bool) -> int:
        return int(await self._hold_script(keys=[self._config.tasks_stream],
                                           args=[WORKER_GROUP, entry_id, self.name, "1" if refresh else "0"]))

    async def _ack(self, entry_id: str) -> None:
        await self._link.call(functools.partial(self._client.xack, self._config.tasks_stream, WORKER_GROUP,
                                                entry_id), repair=self._ensure_groups)

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            task = self._signer.read_task(self._config.tasks_stream, fields)
        except EntryRefused as exc:
            log.warning("refused task entry %s of %s: %s; dropping it unrun", entry_id, self._config.tasks_stream,
                        exc)
            await self._ack(entry_id)
            return
        started = await self._claim(entry_id, task)
        if started is None:
            return
        keepalive = asyncio.ensure_future(self._keep_claimed(entry_id, task.task_id))
        try:
            finished = None
            if entry_id in self._taken_over:  # it may have started under the worker that stopped
                self._taken_over.discard(entry_id)
                where = await self._link.call(functools.partial(self._client.get, self._started_key(started)))
                finished = await self._take_over(started, str(where).split("\t")[0] if where else None, self.host)
            if finished is None:
                finished = await self._run_task(started, functools.partial(self._record_start, started))
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        if task.task_id in self._lost:
            self._lost.discard(task.task_id)
            log.warning("task %s: not reporting it, another worker holds it now", task.task_id)
            return
        await self._send(finished)
        await self._ack(entry_id)

    async def _claim(self, entry_id: str, task: TaskRecord) -> TaskRecord | None:
        """Tell the engine this worker runs the task; None if the entry is no longer this worker's."""
        outages = self._link.outages
        delivery = await self._link.call(functools.partial(self._hold, entry_id, refresh=False))
        if delivery <= 0:
            log.warning("task %s: entry %s is no longer this worker's; leaving it", task.task_id, entry_id)
            return None
        started = task.model_copy(update={"status": "running", "worker": self.name, "start_time": utcnow(),
                                          "queue_entry": entry_id, "queue_delivery": delivery})
        await self._send(started)
        if self._link.outages != outages:  # Redis was away meanwhile: did another worker take the entry over?
            if await self._link.call(functools.partial(self._hold, entry_id, refresh=True)) == 0:
                log.warning("task %s: entry %s was taken over while Redis was away; leaving it", task.task_id,
                            entry_id)
                return None
        log.info("worker %s runs task %s (%s, entry %s, delivery %d)", self.name, task.task_id, task.params.script,
                 entry_id, delivery)
        return started

    def _started_key(self, task: TaskRecord) -> str:
        return f"{self._config.tasks_stream}:started:{task.task_id}:{task.attempt}"

    async def _record_start(self, task: TaskRecord, start: RunStart) -> None:
        """Before the container starts: on which machine, so a worker taking the task over never runs it again."""
        await self._link.call(functools.partial(self._client.set, self._started_key(task),
                                                f"{self.host}\t{self.name}\t{start.container_id}",
                                                ex=STARTED_KEEP_S))

    async def _keep_claimed(self, entry_id: str, task_id: str) -> None:
        """Reset the entry's idle time while the task runs, so no other worker takes it over; stop the task if
        another did anyway (Redis was out of reach for longer than `claim_idle_s`)."""
        every_s = self._config.claim_idle_s / 3
        while True:
            await asyncio.sleep(every_s)
            held = await self._link.call(functools.partial(self._hold, entry_id, refresh=True), cap_s=every_s)
            if held == 0:
                log.warning("task %s was taken over by another worker; stopping it here", task_id)
                self._lost.add(task_id)
                self._cancel_task(task_id, "the queue: another worker took it over")
                return

    async def _send(self, task: TaskRecord) -> None:
        """Put a signed result into the results stream, retrying through an outage."""
        fields: dict[Any, Any] = dict(self._signer.result_fields(self._config.results_stream, task))
        await self._link.call(functools.partial(self._client.xadd, self._config.results_stream, fields,
                                                maxlen=100_000, approximate=True))
