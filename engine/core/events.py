"""One `Event` model for every source (DESIGN §2): alerts, chat commands and button presses.

The `data` of an event is a typed model chosen by its `kind`; `fields()` flattens it into the dotted names the rule
language uses (`alert.severity`, `command.name`, ...), which is all the pure event graph ever sees.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.core.ids import new_id


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(_Model):
    """Who caused the event: a platform account and, once resolved, the principal (person) behind it."""

    platform: str
    account: str
    principal: str | None = None


class ReplyTo(_Model):
    """Where answers to this event go."""

    platform: str
    chat: str
    thread: str | None = None
    message_id: str | None = None


class Cause(_Model):
    """The chain of events that led here; depth limits loops through outside systems."""

    root: str | None = None
    parent: str | None = None
    depth: int = 0


# Most events start a chain: they all share this one (frozen) instance instead of holding a copy each.
NO_CAUSE = Cause()


class AlertData(_Model):
    kind: Literal["alert"] = "alert"
    fingerprint: str
    status: Literal["firing", "resolved"]
    name: str | None = None
    severity: str | None = None
    service: str | None = None
    summary: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    url: str | None = None


# Commands whose arguments are secrets: their text is never shown, logged, audited or journaled. Intake settles them
# before the event is journaled (engine/intake/secrets.py) and journals the outcome in `settled` instead.
SECRET_COMMANDS = frozenset({"link"})


class Settled(_Model):
    """What intake did with a secret-bearing command, in place of its secret: `/link` redeemed (or refused)."""

    ok: bool
    principal: str | None = None  # whom the account acts for now
    reason: str = ""  # why it was refused


class CommandData(_Model):
    kind: Literal["command"] = "command"
    name: str
    args: tuple[str, ...] = ()
    text: str
    settled: Settled | None = None

    @property
    def safe_text(self) -> str:
        """The command as it may be shown: arguments of secret-bearing commands are redacted."""
        return f"/{self.name} [redacted]" if self.name in SECRET_COMMANDS and self.args else self.text

    def redacted(self, settled: Settled) -> CommandData:
        """This command without its secret arguments, carrying what intake did with them instead."""
        return CommandData(name=self.name, text=f"/{self.name} [redacted]", settled=settled)


class ButtonData(_Model):
    kind: Literal["button"] = "button"
    button_id: str
    action: str
    arg: str | None = None
    rule: str
    source_event: str
    alert_fingerprint: str | None = None


class TaskData(_Model):
    """A task finished (the `on task SCRIPT succeeded|failed|timed_out` trigger)."""

    kind: Literal["task"] = "task"
    task_id: str
    script: str
    status: str
    exit_code: int | None = None
    duration: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    rule: str


class EmittedData(_Model):
    """An event a rule raised with `emit NAME`; `values` are the emitting event's own fields (`event.<key>`)."""

    kind: Literal["event"] = "event"
    name: str
    values: dict[str, Any] = Field(default_factory=dict)


class MessageData(_Model):
    """Chat text that is not a command (the `on message matching /re/` trigger)."""

    kind: Literal["message"] = "message"
    text: str
    user: str | None = None
    chat: str | None = None


class ScheduleData(_Model):
    kind: Literal["schedule"] = "schedule"
    rule: str
    time: str


class HeartbeatData(_Model):
    """A dead man's switch (`on alert missing NAME for D`) changed: `state` "missing" (no firing alert NAME arrived
    for D) or "back" (one arrived again); `summary` says it in words."""

    kind: Literal["heartbeat"] = "heartbeat"
    rule: str
    name: str
    state: Literal["missing", "back"]
    last_seen: str | None = None  # ISO time of the last arrival before the silence, if there was one
    silent_for: float = 0.0  # seconds
    summary: str = ""


EventData = Annotated[
    AlertData | CommandData | ButtonData | TaskData | EmittedData | MessageData | ScheduleData | HeartbeatData,
    Field(discriminator="kind"),
]


class Event(_Model):
    id: str = Field(default_factory=new_id)
    source: str
    time: datetime = Field(default_factory=utcnow)
    actor: Actor | None = None
    reply_to: ReplyTo | None = None
    data: EventData
    cause: Cause = NO_CAUSE

    @property
    def kind(self) -> str:
        return self.data.kind

    def fields(self) -> dict[str, object]:
        """The event as the rule language names it: `<kind>.<field>` plus `actor.*`; missing fields are absent."""
        prefix = self.kind
        data = self.data.model_dump(exclude={"kind"}, exclude_none=True)
        if isinstance(self.data, EmittedData):
            data = {**data.pop("values"), "name": self.data.name}
        flat: dict[str, object] = {f"{prefix}.{key}": value for key, value in data.items()}
        if self.actor is not None:
            flat["actor.platform"] = self.actor.platform
            flat["actor.account"] = self.actor.account
            if self.actor.principal is not None:
                flat["actor.principal"] = self.actor.principal
        return flat
