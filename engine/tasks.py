"""The durable task queue: rule runs produce tasks, workers consume them, a monitor enforces deadlines.

A task record has the customer's shape (DESIGN §2): `task_id, platform, command, params{script, args, timeout},
status, create_time`, plus what is needed to report back (run, rule, event, reply_to) and the outcome. Records live
in the `tasks` table; the in-memory wake-up is only a hint, so a restart loses nothing pending.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import SandboxError
from engine.events import ReplyTo, utcnow
from engine.ids import new_id
from engine.sandbox import Sandbox
from engine.snapshots import TaskView
from engine.store import Database

log = logging.getLogger("herald.tasks")

Status = Literal["pending", "running", "succeeded", "failed", "timed_out", "cancelled"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
MONITOR_GRACE_S = 30.0  # the sandbox kills at the timeout itself; the monitor is the backstop

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    create_time TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(status, create_time) WHERE status IN ('pending', 'running');
"""


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str
    args: list[str] = Field(default_factory=list)
    timeout: float
    memory_bytes: int | None = None  # None: the sandbox's default
    network: Literal["none", "default"] = "none"


class TaskRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(default_factory=new_id)
    platform: str
    command: str
    params: TaskParams
    status: Status = "pending"
    create_time: datetime = Field(default_factory=utcnow)
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    enforced: list[str] = Field(default_factory=list)
    run_id: str
    rule: str
    event_id: str
    requested_by: str | None = None
    reply_to: ReplyTo | None = None
    depth: int = 0  # of the event that asked for it; the task's own event is one deeper
    output_bytes: int | None = None
    limits_note: str = ""
    worker: str | None = None  # the `herald worker` that ran it, when tasks go through Redis

    def view(self) -> TaskView:
        return TaskView(
            task_id=self.task_id, platform=self.platform, command=self.command, script=self.params.script,
            args=self.params.args, status=self.status, create_time=self.create_time.isoformat(),
            exit_code=self.exit_code, output_tail=(self.error or self.output)[-400:],
        )


def _save(conn: sqlite3.Connection, task: TaskRecord) -> None:
    conn.execute(
        "INSERT INTO tasks (task_id, status, create_time, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, body = excluded.body",
        (task.task_id, task.status, task.create_time.isoformat(), task.model_dump_json()),
    )


class TaskQueue:
    """Producer side and storage of tasks; workers claim from it."""

    def __init__(self, db: Database, on_change: Callable[[TaskRecord], None]) -> None:
        self._db = db
        self._on_change = on_change
        self._wakeup = asyncio.Event()

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
        """Wait for the oldest pending task and mark it running (atomically on the database thread)."""
        while True:
            self._wakeup.clear()
            task = await self._db.write(self._claim_oldest)
            if task is not None:
                self._on_change(task)
                return task
            await self._wakeup.wait()

    @staticmethod
    def _claim_oldest(conn: sqlite3.Connection) -> TaskRecord | None:
        row = conn.execute(
            "SELECT body FROM tasks WHERE status = 'pending' ORDER BY create_time, task_id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        task = TaskRecord.model_validate_json(row["body"])
        task = task.model_copy(update={"status": "running", "start_time": utcnow()})
        _save(conn, task)
        return task

    async def wait_enqueued(self, timeout_s: float) -> None:
        """Wait until a task is enqueued (or `timeout_s` passes): for a dispatcher that is not a local worker."""
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see engine/timers.py
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def update(self, task: TaskRecord) -> None:
        await self._db.write(_save, task)
        self._on_change(task)

    async def get(self, task_id: str) -> TaskRecord | None:
        row = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        )
        return TaskRecord.model_validate_json(row["body"]) if row else None

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

    async def recover(self) -> list[TaskRecord]:
        """Tasks left running by a previous process cannot be trusted to have finished: fail them, visibly."""

        def _recover(conn: sqlite3.Connection) -> list[TaskRecord]:
            rows = conn.execute("SELECT body FROM tasks WHERE status = 'running'").fetchall()
            failed = []
            for row in rows:
                task = TaskRecord.model_validate_json(row["body"]).model_copy(
                    update={"status": "failed", "end_time": utcnow(),
                            "error": "interrupted: Herald stopped while this task was running"}
                )
                _save(conn, task)
                failed.append(task)
            return failed

        return await self._db.write(_recover)

    async def pending(self) -> list[TaskRecord]:
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM tasks WHERE status = 'pending' ORDER BY create_time").fetchall())
        return [TaskRecord.model_validate_json(row["body"]) for row in rows]

    async def recent(self, limit: int) -> list[TaskRecord]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT body FROM tasks ORDER BY create_time DESC LIMIT ?", (limit,)).fetchall()
        )
        return [TaskRecord.model_validate_json(row["body"]) for row in reversed(rows)]


class TaskWorkers:
    """Consumers: each claims a task, runs it in the sandbox, stores the outcome and reports it."""

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
            finished = await self.execute(task)
            await self._queue.update(finished)
            try:
                await self._on_finished(finished)
            except Exception:
                log.exception("reporting the result of task %s failed", finished.task_id)

    async def execute(self, task: TaskRecord) -> TaskRecord:
        """Run one task in the sandbox under the monitor's deadline; return it finished."""
        deadline = utcnow() + timedelta(seconds=task.params.timeout + MONITOR_GRACE_S)
        run = asyncio.ensure_future(self._run(task))
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

    async def _run(self, task: TaskRecord) -> TaskRecord:
        try:
            result = await self._sandbox.run(
                task.params.script, task.params.args, timeout_s=task.params.timeout, task_id=task.task_id,
                memory=task.params.memory_bytes, network=task.params.network,
                on_output=(lambda line: self._on_output(task, line)) if self._on_output else None,
            )
        except (SandboxError, ValueError) as exc:
            return task.model_copy(update={"status": "failed", "end_time": utcnow(), "error": str(exc)})
        if result.timed_out:
            status: Status = "timed_out"
        else:
            status = "succeeded" if result.exit_code == 0 else "failed"
        return task.model_copy(
            update={"status": status, "end_time": utcnow(), "exit_code": result.exit_code,
                    "output": result.output, "enforced": list(result.enforced),
                    "output_bytes": result.output_bytes, "limits_note": result.limits_note}
        )

    async def monitor(self, interval_s: float = 1.0) -> None:
        """Cancel any run that outlived its timeout plus a grace period (a stuck sandbox call)."""
        while True:
            await asyncio.sleep(interval_s)
            now = datetime.now(UTC)
            for task_id, (deadline, run) in list(self._deadlines.items()):
                if now > deadline and not run.done():
                    log.warning("task %s passed its deadline; cancelling it", task_id)
                    run.cancel()
