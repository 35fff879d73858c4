"""Plain snapshot records the engine publishes to observers (the TUI, `/api/v1/stream`).

Observers hold these, never engine objects. Each carries only what a view shows; all are JSON-safe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventView(_View):
    id: str
    kind: str
    source: str
    time: str
    summary: str


class RunView(_View):
    run_id: str
    event_id: str
    rule: str
    state: str
    time: str
    detail: str = ""


class TaskView(_View):
    task_id: str
    platform: str
    command: str
    script: str
    args: list[str]
    status: Literal["pending", "running", "succeeded", "failed", "timed_out", "cancelled"]
    create_time: str
    exit_code: int | None = None
    output_tail: str = ""


class AuditView(_View):
    seq: int
    time: str
    action: str
    actor: str
    summary: str


class Snapshot(_View):
    events: list[EventView] = []
    runs: list[RunView] = []
    tasks: list[TaskView] = []
    audit: list[AuditView] = []
