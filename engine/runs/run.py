"""What a rule run carries and what it may use: the RuleRun record, the services handed to actions and stages, and
small helpers for describing events."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from dsl import CompiledRule, EventGraph
from engine.client.snapshots import EventView
from engine.core.bus import Bus
from engine.core.config import Config
from engine.core.events import (
    AlertData,
    ButtonData,
    CommandData,
    EmittedData,
    Event,
    HeartbeatData,
    MessageData,
    ScheduleData,
    TaskData,
)
from engine.core.store import Database
from engine.delivery.delivery import Delivery
from engine.delivery.outlets import Audience
from engine.runs.alert_board import AlertBoard
from engine.runs.alerts import AlertState
from engine.runs.upstream_silences import UpstreamSilences
from engine.security.audit import AuditLog
from engine.security.identity import Directory
from engine.tasks.queue import TaskQueue


class RunState(StrEnum):
    INIT = "INIT"
    CHECK_PERMISSION = "CHECK_PERMISSION"
    VALIDATE_PARAMS = "VALIDATE_PARAMS"
    CONFIRM = "CONFIRM"
    EXECUTE = "EXECUTE"
    REPORT_RESULT = "REPORT_RESULT"
    DENIED = "DENIED"
    REJECTED = "REJECTED"
    SKIPPED = "SKIPPED"  # a stage (dedupe, rate limit, disk check...) decided the actions do not run


@dataclass(frozen=True)
class RuleRun:
    """One rule acting on one event. `fields` are the event's fields plus what the run learned (bound arguments,
    the caller); templates and stages read them."""

    run_id: str
    rule: CompiledRule
    event: Event
    fields: dict[str, object] = field(default_factory=dict)

    @property
    def is_command(self) -> bool:
        return isinstance(self.event.data, CommandData)


class ClauseState(Protocol):
    """The stateful clauses of an engine (engine.runs.stateful.Stateful), as the services carry them."""

    def now(self) -> datetime: ...

    async def alert_arrived(self, event: Event, data: AlertData) -> bool: ...


@dataclass(eq=False)
class Services:
    """Everything an action or a stage may use; one instance per engine. A config reload replaces `config` (and
    reconfigures the directory) in place, between two events."""

    config: Config
    directory: Directory
    db: Database
    audit: AuditLog
    tasks: TaskQueue
    alerts: AlertState
    delivery: Delivery
    bus: Bus
    submit: Callable[[Sequence[Event]], Awaitable[None]]
    board: AlertBoard  # what operators see of alerts (the TUI's Alerts tab)
    # Teams declared in rule files over the built-in ones, by name; the runtime refills it whenever a graph is loaded.
    declared_teams: dict[str, Audience] = field(default_factory=dict)
    # (task id, who asks) -> what happened, in words; the engine provides it (it owns the workers).
    cancel_task: Callable[[str, str], Awaitable[str]] | None = None
    # The engine's stateful clauses (engine.runs.stateful.Stateful), set while they are attached.
    stateful: ClauseState | None = None
    # Mutes mirrored into Alertmanager as silences ([alerts] alertmanager_url); None in tests that build Services.
    upstream: UpstreamSilences | None = None

    async def audit_publish(self, action: str, actor: str, **data: Any) -> None:
        await self.audit.append(action, actor, **data)

    def audit_soon(self, action: str, actor: str, **data: Any) -> None:
        """Audit without waiting for a commit of its own; see AuditLog.append_soon for when that is right."""
        self.audit.append_soon(action, actor, **data)


def who(event: Event) -> str:
    """The principal behind an event, else its platform account, else its source."""
    if event.actor is None:
        return event.source
    return event.actor.principal or f"{event.actor.platform}:{event.actor.account}"


_last_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The time now to the millisecond, ISO 8601. Formatted once per millisecond: a busy engine asks many times."""
    global _last_iso
    ms = time.time_ns() // 1_000_000
    if ms != _last_iso[0]:
        moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        _last_iso = (ms, moment.isoformat(timespec="milliseconds"))
    return _last_iso[1]


def event_view(event: Event) -> EventView:
    return EventView(id=event.id, kind=event.kind, source=event.source, time=event.time.isoformat(),
                     summary=summarize(event))


def summarize(event: Event) -> str:
    """One line describing an event, for views and default notification texts."""
    data = event.data
    if isinstance(data, AlertData):
        head = f"[{(data.severity or 'unknown').upper()}]" if data.status == "firing" else "[RESOLVED]"
        what = " ".join(part for part in (data.name, data.summary and f"— {data.summary}") if part)
        return f"{head} {data.service or '?'}: {what or data.fingerprint}"
    if isinstance(data, CommandData):
        return f"{who(event)}: {data.safe_text}"
    if isinstance(data, ButtonData):
        return f"{who(event)} pressed {data.action}{' ' + data.arg if data.arg else ''}"
    if isinstance(data, TaskData):
        code = f" (exit code {data.exit_code})" if data.exit_code is not None else ""
        return f"task {data.script} {data.status}{code}"
    if isinstance(data, EmittedData):
        return f"event {data.name}"
    if isinstance(data, MessageData):
        return f"{who(event)}: {data.text[:200]}"
    if isinstance(data, ScheduleData):
        return f"schedule of {data.rule}"
    if isinstance(data, HeartbeatData):
        return data.summary or f"{data.name} {data.state}"
    return event.kind


class RunHost(Protocol):
    """What the stateful clauses need of the runtime: the rules now running, the services, and resuming a run that
    a clause parked (a confirmation, a group)."""

    graph: EventGraph
    services: Services

    async def continue_run(self, run: RuleRun, *, first_stage: int) -> None: ...
