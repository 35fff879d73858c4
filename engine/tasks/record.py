"""A task as the queue keeps it (DESIGN section 2): its parameters, its status and attempts, and what it printed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.client.snapshots import TaskView
from engine.core.events import ReplyTo, utcnow
from engine.core.ids import new_id

Status = Literal["pending", "running", "succeeded", "failed", "timed_out", "cancelled"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
RETRYABLE: frozenset[str] = frozenset({"failed", "timed_out"})
DEFAULT_BACKOFF_S = 10.0
MAX_BACKOFF_S = 3600.0


def retry_delay_s(backoff_s: float, attempt: int) -> float:
    """The wait before attempt `attempt + 1`: `backoff_s` after the first attempt, doubling, at most an hour."""
    return min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built with the first task, not at start
    script: str
    args: list[str] = Field(default_factory=list)
    timeout: float
    memory_bytes: int | None = None  # None: the sandbox's default
    network: Literal["none", "default", "allow"] = "none"
    network_allow: list[str] = Field(default_factory=list)  # with "allow": "HOST:PORT" (the sandbox checks them)
    retries: int = Field(default=0, ge=0, le=10)  # further attempts after a failed or timed-out one
    backoff_s: float = DEFAULT_BACKOFF_S


class TaskRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built with the first task, not at start
    task_id: str = Field(default_factory=new_id)
    platform: str
    command: str
    params: TaskParams
    status: Status = "pending"
    create_time: datetime = Field(default_factory=utcnow)
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    output: str = ""  # stdout and stderr interleaved, as the chat shows it
    stdout_tail: str = ""  # the end of each stream alone, for `{task.stdout_tail}` and `{task.stderr_tail}`
    stderr_tail: str = ""
    error: str | None = None  # Herald's reason when it could not run the script or stopped it
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
    queue_entry: str | None = None  # the Redis entry that worker took it from ...
    queue_delivery: int | None = None  # ... on that entry's n-th delivery (a takeover is a later one)
    attempt: int = 1
    not_before: datetime | None = None  # set while a retry waits for its backoff
    earlier: list[str] = Field(default_factory=list)  # how attempt 1, 2, ... ended (`outcome()`), one line each
    container: str | None = None  # this attempt's container, stored before it starts (crash recovery adopts it)

    @property
    def attempts(self) -> int:
        return 1 + self.params.retries

    def view(self) -> TaskView:
        return TaskView(
            task_id=self.task_id, platform=self.platform, command=self.command, script=self.params.script,
            args=self.params.args, status=self.status, create_time=self.create_time.isoformat(),
            exit_code=self.exit_code, attempt=self.attempt, attempts=self.attempts,
            output_tail=(self.error or self.output or (self.earlier[-1] if self.earlier else ""))[-400:],
        )

    def outcome(self) -> str:
        """One line: how this attempt ended."""
        text = f"{self.params.script} {self.status}"
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.error:
            text += f": {self.error}"
        return text

    def next_attempt(self, now: datetime) -> TaskRecord | None:
        """The pending record of the retry this finished attempt earns, or None when it earns none."""
        if self.status not in RETRYABLE or self.attempt >= self.attempts:
            return None
        delay = retry_delay_s(self.params.backoff_s, self.attempt)
        return self.model_copy(update={
            "status": "pending", "attempt": self.attempt + 1, "not_before": now + timedelta(seconds=delay),
            "earlier": [*self.earlier, self.outcome()],
            "container": None,
            "start_time": None, "end_time": None, "exit_code": None, "output": "", "error": None,
            "stdout_tail": "", "stderr_tail": "",
            "output_bytes": None, "worker": None, "queue_entry": None, "queue_delivery": None,
        })
