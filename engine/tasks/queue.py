"""The durable task queue: rule runs produce tasks, workers consume them, a monitor enforces deadlines.

A task record has the customer's shape (DESIGN §2): `task_id, platform, command, params{script, args, timeout},
status, create_time`, plus what is needed to report back (run, rule, event, reply_to) and the outcome. Records live
in the `tasks` table; the in-memory wake-up is only a hint, so a restart loses nothing pending.

Retries (`run ... retry 3 times backoff 30s`): a failed or timed-out attempt with retries left goes back to
`pending` under the same task id with `attempt` + 1 and a `not_before` moment (the backoff doubles per attempt), so
a waiting retry survives a restart like any pending task. Cancelled tasks are never retried.

With the engine's own workers no task runs twice, and none is reported failed because Herald crashed while it ran:
before its container starts, the container's id is stored with the task (`container`), and the container stays until
the result is stored. On start, `TaskWorkers.recover` decides for each task left `running` (engine/tasks/recovery.py):
a container that started is adopted (its real exit code and output are the result), a task whose container never
started runs again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from engine.core.errors import HeraldError, SandboxError
from engine.core.events import utcnow
from engine.core.store import Database
from engine.sandbox.runner import Leftover, RunStart, Sandbox, SandboxResult
from engine.tasks import recovery
from engine.tasks.record import (  # noqa: F401 - the queue's records, re-exported for its users
    DEFAULT_BACKOFF_S,
    FINAL,
    MAX_BACKOFF_S,
    RETRYABLE,
    Status,
    TaskParams,
    TaskRecord,
    retry_delay_s,
)

log = logging.getLogger("herald.tasks")

MONITOR_GRACE_S = 30.0  # the sandbox kills at the timeout itself; the monitor is the backstop
MIN_SHORT_ID = 4  # the fewest characters of a task id a person may type for the whole id
IDLE_POLL_S = 60.0  # a claim with nothing due re-checks at least this often

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    create_time TEXT NOT NULL,
    body TEXT NOT NULL,
    not_before REAL  -- epoch seconds; a retry waiting for its backoff is not claimed before
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(status, create_time) WHERE status IN ('pending', 'running');
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Files written before retries existed lack `not_before`; before results were marked reported, `unreported`
    (1: stored as final, its result not yet handed to the run and the requester; see `TaskQueue.unreported`)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    if "not_before" not in columns:
        conn.execute("ALTER TABLE tasks ADD COLUMN not_before REAL")
    if "unreported" not in columns:
        conn.execute("ALTER TABLE tasks ADD COLUMN unreported INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS tasks_unreported ON tasks(task_id) WHERE unreported = 1")


def _save(conn: sqlite3.Connection, task: TaskRecord) -> None:
    conn.execute(
        "INSERT INTO tasks (task_id, status, create_time, body, not_before) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, body = excluded.body, "
        "not_before = excluded.not_before",
        (task.task_id, task.status, task.create_time.isoformat(), task.model_dump_json(),
         task.not_before.timestamp() if task.not_before else None),
    )


def _settle(conn: sqlite3.Connection, finished: TaskRecord) -> TaskRecord:
    """Store a finished attempt: as final (not yet reported), or as the pending retry it earns. Returns what was
    stored."""
    stored = finished.next_attempt(utcnow()) or finished
    _save(conn, stored)
    if stored.status in FINAL:
        conn.execute("UPDATE tasks SET unreported = 1 WHERE task_id = ?", (stored.task_id,))
    return stored


def _next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest retry still waiting falls due (epoch seconds), if one waits. Only future moments count: a
    due retry is the caller's to take now, and counting it would make a waiter that cannot take it (a publisher
    whose retry still sits in the stream for a busy worker) spin."""
    row = conn.execute("SELECT min(not_before) FROM tasks WHERE status = 'pending' AND not_before > ?",
                       (time.time(),)).fetchone()
    return None if row is None else row[0]


class TaskQueue:
    """Producer side and storage of tasks; workers claim from it."""

    def __init__(self, db: Database, on_change: Callable[[TaskRecord], None]) -> None:
        self._db = db
        self._on_change = on_change
        self._wakeup = asyncio.Event()
        # Why tasks cannot be handed to workers right now (the Redis queue is unreachable), or None. Tasks are still
        # queued here, and the dispatcher hands them over once it is back.
        self.outage: str | None = None

    async def enqueue(self, task: TaskRecord) -> bool:
        """Queue a new task; False (and nothing queued) when a task with this id exists already: task ids are
        derived from the run and the action, so a replay after a crash never starts a task twice."""
        def _insert(conn: sqlite3.Connection) -> bool:
            return conn.execute("INSERT OR IGNORE INTO tasks (task_id, status, create_time, body) VALUES (?, ?, ?, ?)",
                                (task.task_id, task.status, task.create_time.isoformat(),
                                 task.model_dump_json())).rowcount == 1

        if not await self._db.write(_insert):
            return False
        self._on_change(task)
        self._wakeup.set()
        return True

    async def claim(self) -> TaskRecord:
        """Wait for the oldest pending task that is due and mark it running (atomically on the database thread)."""
        while True:
            self._wakeup.clear()
            task, next_due = await self._db.write(self._claim_oldest)
            if task is not None:
                self._on_change(task)
                return task
            await self._sleep_until(next_due, IDLE_POLL_S)

    @staticmethod
    def _claim_oldest(conn: sqlite3.Connection) -> tuple[TaskRecord | None, float | None]:
        row = conn.execute(
            "SELECT body FROM tasks WHERE status = 'pending' AND (not_before IS NULL OR not_before <= ?) "
            "ORDER BY create_time, task_id LIMIT 1", (time.time(),)
        ).fetchone()
        if row is None:
            return None, _next_due(conn)
        task = TaskRecord.model_validate_json(row["body"])
        task = task.model_copy(update={"status": "running", "start_time": utcnow(), "not_before": None})
        _save(conn, task)
        return task, None

    async def _sleep_until(self, due: float | None, at_most_s: float) -> None:
        """Wait for an enqueue (or a settled retry), the moment `due` (epoch seconds), or `at_most_s`."""
        timeout_s = at_most_s if due is None else max(0.0, min(at_most_s, due - time.time()))
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see engine/core/timers.py
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def wait_enqueued(self, timeout_s: float) -> None:
        """Wait until a task is enqueued or a retry falls due (or `timeout_s` passes): for a dispatcher that is
        not a local worker."""
        self._wakeup.clear()
        await self._sleep_until(await self._db.call(_next_due), timeout_s)

    async def update(self, task: TaskRecord) -> None:
        await self._db.write(_save, task)
        self._on_change(task)

    def reported(self, task_id: str) -> None:
        """The task's result reached its run and its requester's outbox: a start need not report it again. Rides
        with the next commit (a crash before it only means one more, identical, report at start)."""
        self._db.defer_row("UPDATE tasks SET unreported = 0 WHERE task_id = ?", (task_id,))

    async def unreported(self) -> list[TaskRecord]:
        """Final tasks whose result was stored but, because Herald stopped in between, maybe never reported:
        reported again at start (the result's outbox key makes a second copy of a sent one the same row)."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM tasks WHERE unreported = 1 ORDER BY create_time").fetchall())
        return [TaskRecord.model_validate_json(row["body"]) for row in rows]

    async def settle(self, finished: TaskRecord) -> TaskRecord:
        """Store a finished attempt; a failure with retries left comes back pending (see the module docstring).
        Returns what was stored: the final record, or the waiting retry."""
        stored = await self._db.write(_settle, finished)
        self._on_change(stored)
        if stored.status == "pending":
            self._wakeup.set()  # a claimer asleep until a later moment recomputes its wait
        return stored

    async def get(self, task_id: str) -> TaskRecord | None:
        row = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        )
        return TaskRecord.model_validate_json(row["body"]) if row else None

    async def find(self, typed: str) -> TaskRecord | list[str]:
        """The task a person means by `typed`: its whole id, or the start or the end of it (the TUI shows the last
        8 characters) when only one task's id starts or ends so, and it is at least MIN_SHORT_ID long. Otherwise
        the ids it could mean, newest first (at most 10; empty when none)."""
        typed = typed.strip().upper()  # ids are upper-case; people type them in either case
        exact = await self.get(typed)
        if exact is not None:
            return exact
        if len(typed) < MIN_SHORT_ID or not typed.isalnum():  # and no LIKE wildcards from what was typed
            return []
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT task_id FROM tasks WHERE task_id LIKE ? OR task_id LIKE ? ORDER BY create_time DESC LIMIT 10",
            (f"{typed}%", f"%{typed}")).fetchall())
        ids = [row["task_id"] for row in rows]
        if len(ids) == 1:
            return await self.get(ids[0]) or []
        return ids

    async def cancel_pending(self, task_id: str, by: str) -> TaskRecord | None:
        """Cancel a task that has not started; the cancelled record, or None if it is not pending."""

        def _cancel(conn: sqlite3.Connection) -> TaskRecord | None:
            row = conn.execute("SELECT body FROM tasks WHERE task_id = ? AND status = 'pending'",
                               (task_id,)).fetchone()
            if row is None:
                return None
            task = TaskRecord.model_validate_json(row["body"]).model_copy(
                update={"status": "cancelled", "end_time": utcnow(), "error": f"cancelled by {by}"})
            _save(conn, task)
            return task

        task = await self._db.write(_cancel)
        if task is not None:
            self._on_change(task)
        return task

    async def running(self) -> list[TaskRecord]:
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM tasks WHERE status = 'running' ORDER BY create_time").fetchall())
        return [TaskRecord.model_validate_json(row["body"]) for row in rows]

    async def pending(self) -> list[TaskRecord]:
        """Pending tasks that are due (a retry waiting for its backoff is not)."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM tasks WHERE status = 'pending' AND (not_before IS NULL OR not_before <= ?) "
            "ORDER BY create_time", (time.time(),)).fetchall())
        return [TaskRecord.model_validate_json(row["body"]) for row in rows]

    async def recent(self, limit: int) -> list[TaskRecord]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM tasks ORDER BY create_time DESC LIMIT ?", (limit,)).fetchall()
        )
        return [TaskRecord.model_validate_json(row["body"]) for row in reversed(rows)]


@dataclass
class Recovered:
    """What `TaskWorkers.recover` found: results to report now, and containers to adopt (`TaskWorkers.adopt`)."""

    finished: list[TaskRecord] = field(default_factory=list)
    adoptions: list[tuple[TaskRecord, Leftover]] = field(default_factory=list)


class TaskWorkers:
    """Consumers: each claims a task, runs it in the sandbox, stores the outcome and reports it.

    With a queue (the engine's own workers) a run's container id is stored before it starts and the container is
    removed only once the result is stored, so `recover` can tell, after a crash, which tasks never started.
    """

    def __init__(
        self, *, queue: TaskQueue | None, sandbox: Sandbox, on_finished: Callable[[TaskRecord], Awaitable[None]],
        on_output: Callable[[TaskRecord, str], None] | None = None,
    ) -> None:
        self._queue = queue
        self._sandbox = sandbox
        self._on_finished = on_finished
        self._on_output = on_output
        self._deadlines: dict[str, tuple[datetime, asyncio.Task[TaskRecord]]] = {}
        self._cancelled: dict[str, str] = {}  # task id -> who asked

    async def work(self) -> None:
        """Consume the local queue (embedded mode); `herald worker` uses `execute` directly."""
        assert self._queue is not None
        while True:
            task = await self._queue.claim()
            await self._finish(await self.execute(task))

    async def recover(self) -> Recovered:
        """Decide about every task a previous process left running (engine/tasks/recovery.py), before any worker of
        this one claims a task: run again what never started, fail what cannot be known, remove the containers
        nobody adopts. Returns the results to report, and the containers to hand to `adopt`."""
        assert self._queue is not None
        running = await self._queue.running()
        found: list[Leftover] | None = None
        problem = None
        try:
            found = await self._sandbox.leftovers()
        except SandboxError as exc:
            problem = str(exc)
            log.error("could not look for the containers of tasks left running: %s", problem)
        except Exception as exc:  # a broken host must not stop Herald from starting (as in Sandbox.start)
            problem = f"looking for them failed unexpectedly: {exc!r}"
            log.exception("could not look for the containers of tasks left running")
        plan = recovery.plan(running, found, problem)
        for task in plan.rerun:
            log.warning("task %s (%s) never started its container before Herald stopped: running it now",
                        task.task_id, task.params.script)
            await self._queue.update(task)
        for task in plan.failed:
            log.error("task %s (%s): %s", task.task_id, task.params.script, task.error)
            await self._queue.update(task)
        for task, left in plan.adopt:
            log.warning("task %s (%s) was running when Herald stopped: adopting its container %s", task.task_id,
                        task.params.script, left.describe())
        await self._sandbox.remove_leftovers(plan.remove)
        return Recovered(finished=plan.failed, adoptions=plan.adopt)

    async def adopt(self, adoptions: list[tuple[TaskRecord, Leftover]]) -> None:
        """Wait for each adopted container to finish (or kill it at the task's timeout), then store and report its
        result like any run's."""
        await asyncio.gather(*(self._adopt_one(task, left) for task, left in adoptions))

    async def execute(self, task: TaskRecord,
                      on_started: Callable[[RunStart], Awaitable[None]] | None = None) -> TaskRecord:
        """Run one task in the sandbox under the monitor's deadline; return it finished. `on_started` (for
        `herald worker`, which has no local queue to record it in) is awaited before its container starts."""
        return await self._supervise(task, self._run(task, on_started))

    async def take_over(self, task: TaskRecord, started_on: str | None, host: str) -> TaskRecord | None:
        """For `herald worker`: a task taken over from a worker that stopped, finished by adopting its container, or
        failed when its result cannot be known; None when it never started and may run now (recovery.take_over)."""
        found: list[Leftover] | None = None
        problem = None
        try:
            found = [c for c in await self._sandbox.containers_of_task(task.task_id)
                     if c.attempt in (None, task.attempt)]
        except SandboxError as exc:
            problem = str(exc)
        decision = recovery.take_over(found, started_on, host, problem)
        await self._sandbox.remove_leftovers(decision.remove)
        if decision.adopt is not None:
            log.warning("task %s (%s): adopting container %s of the worker that stopped", task.task_id,
                        task.params.script, decision.adopt.describe())
            finished = await self._supervise(task, self._adopted(task, decision.adopt))
            await asyncio.shield(self._sandbox.remove(decision.adopt.container_id))
            return finished.model_copy(update={"container": None})
        if decision.failed is not None:
            log.error("task %s (%s): %s", task.task_id, task.params.script, decision.failed)
            return task.model_copy(update={"status": "failed", "end_time": utcnow(), "error": decision.failed})
        return None

    async def _adopt_one(self, task: TaskRecord, left: Leftover) -> None:
        await self._finish(await self._supervise(task, self._adopted(task, left)))

    async def _finish(self, finished: TaskRecord) -> None:
        """Store how the task ended, report it, and only then remove its container (never before storing: see
        `recover`; after reporting, so the report waits for no Podman call)."""
        assert self._queue is not None
        try:
            settled = await self._queue.settle(finished)
        except Exception:
            log.exception("could not store how task %s ended; it stays running until the next start, which adopts "
                          "its container", finished.task_id)
            return
        try:
            await self._on_finished(settled)
            self._queue.reported(settled.task_id)
        except Exception:
            log.exception("reporting the result of task %s failed; the next start reports it again",
                          settled.task_id)
        finally:
            if finished.container:
                await asyncio.shield(self._sandbox.remove(finished.container))  # a stop must not strand it

    async def _supervise(self, task: TaskRecord, work: Coroutine[object, object, TaskRecord]) -> TaskRecord:
        """Run `work` (a run or an adoption of `task`) under the monitor's deadline and `cancel`."""
        deadline = utcnow() + timedelta(seconds=task.params.timeout + MONITOR_GRACE_S)
        run = asyncio.ensure_future(work)
        self._deadlines[task.task_id] = (deadline, run)
        try:
            return await run
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the engine is stopping
            by = self._cancelled.pop(task.task_id, None)
            if by is not None:
                return task.model_copy(update={"status": "cancelled", "end_time": utcnow(),
                                               "error": f"cancelled by {by}"})
            return task.model_copy(
                update={"status": "timed_out", "end_time": utcnow(), "error": "killed by the task monitor"}
            )
        finally:
            self._deadlines.pop(task.task_id, None)

    def cancel(self, task_id: str, by: str) -> bool:
        """Stop a task this process is running (its container is removed); False if it runs nowhere here."""
        entry = self._deadlines.get(task_id)
        if entry is None or entry[1].done():
            return False
        self._cancelled[task_id] = by
        entry[1].cancel()
        return True

    async def _run(self, task: TaskRecord,
                   on_started: Callable[[RunStart], Awaitable[None]] | None = None) -> TaskRecord:
        local = self._queue is not None  # `herald worker` (no queue) reports through Redis, and removes at once
        on_output = self._on_output
        try:
            result = await self._sandbox.run(
                task.params.script, task.params.args, timeout_s=task.params.timeout, task_id=task.task_id,
                memory=task.params.memory_bytes, network=task.params.network,
                network_allow=task.params.network_allow, attempt=task.attempt,
                on_output=(lambda line: on_output(task, line)) if on_output else None,
                on_started=functools.partial(self._record_start, task) if local else on_started, keep=local,
            )
        except (HeraldError, ValueError) as exc:  # a DurabilityError from `_record_start` too: it never started
            return task.model_copy(update={"status": "failed", "end_time": utcnow(), "error": str(exc)})
        return _finished(task, result, container=result.container_id if local else None)

    async def _record_start(self, task: TaskRecord, start: RunStart) -> None:
        """Durably, before the container starts: which container runs this attempt (see `recover`)."""
        assert self._queue is not None
        await self._queue.update(task.model_copy(update={
            "container": start.container_id, "enforced": list(start.enforced), "limits_note": start.limits_note}))

    async def _adopted(self, task: TaskRecord, left: Leftover) -> TaskRecord:
        try:
            result = await self._sandbox.adopt(left, timeout_s=task.params.timeout)
        except (HeraldError, ValueError) as exc:
            return task.model_copy(update={
                "status": "failed", "end_time": utcnow(), "container": None,
                "error": f"could not take over its container {left.container_id[:12]} after a restart: {exc}"})
        return _finished(task, result, container=result.container_id)

    async def monitor(self, interval_s: float = 1.0) -> None:
        """Cancel any run that outlived its timeout plus a grace period (a stuck sandbox call)."""
        while True:
            await asyncio.sleep(interval_s)
            now = datetime.now(UTC)
            for task_id, (deadline, run) in list(self._deadlines.items()):
                if now > deadline and not run.done():
                    log.warning("task %s passed its deadline; cancelling it", task_id)
                    run.cancel()


def _finished(task: TaskRecord, result: SandboxResult, *, container: str | None) -> TaskRecord:
    """The task record of a run that ended: its status, exit code and output. An adopted run's result carries no
    `enforced`: the record keeps what was stored when its container started."""
    if result.timed_out:
        status: Status = "timed_out"
    else:
        status = "succeeded" if result.exit_code == 0 else "failed"
    update: dict[str, object] = {"status": status, "end_time": utcnow(), "exit_code": result.exit_code,
                                 "output": result.output, "output_bytes": result.output_bytes, "container": container,
                                 "stdout_tail": result.stdout_tail, "stderr_tail": result.stderr_tail}
    if result.enforced:
        update.update(enforced=list(result.enforced), limits_note=result.limits_note)
    return task.model_copy(update=update)
