"""What the runtime says to people, in its own terms: notifications with buttons, progress, results, output.

engine.delivery.render turns these into the platform-neutral `Message`; engine.delivery.delivery decides where they
go. The runtime addresses people and conversations, never a platform's connector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from engine.delivery.message import Conversation, LinkButton


@dataclass(frozen=True)
class Button:
    id: str
    label: str
    action: str
    arg: str | None = None


@dataclass(frozen=True)
class Notification:
    event_id: str
    rule: str
    text: str
    buttons: tuple[Button, ...] = ()
    severity: str | None = None
    alert: str | None = None  # the fingerprint of the alert it is about: its message follows the alert's state
    links: tuple[LinkButton, ...] = ()  # the alert's runbook, dashboard, source... (engine.runs.links)
    line: str | None = None  # the alert in one line, for an alert storm's digest (engine.delivery.storm)


@dataclass(frozen=True)
class Escalated:
    """An escalation step that notified `target`: the latest time, and how often (repeats count)."""

    target: str
    at: datetime
    times: int = 1


@dataclass(frozen=True)
class AlertStatus:
    """Where an alert stands now, as every message about it shows it."""

    fired_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    unacknowledged_by: str | None = None  # the latest unacknowledgement (acknowledging again keeps it shown)
    unacknowledged_at: datetime | None = None
    muted_by: str | None = None
    muted_until: datetime | None = None
    muted_in: str | None = None  # where the silence lives when it is not Herald's own ("Alertmanager")
    muted_until_resolved: bool = False  # a `mute until resolved`: the resolve ends it (muted_until: at the latest)
    resolved_at: datetime | None = None
    escalations: tuple[Escalated, ...] = ()

    def as_json(self) -> dict[str, object]:
        """JSON-safe, times as ISO 8601, escalation steps included (`[{"target", "at", "times"}]`)."""
        return {name: _plain(value) for name, value in dataclasses.asdict(self).items()}


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Audience:
    """Who a team notification reaches: principals (wherever they can be reached) and conversations (rooms,
    channels, groups) on any platform."""

    team: str
    members: tuple[str, ...] = ()
    targets: tuple[Conversation, ...] = ()


@dataclass(frozen=True)
class Progress:
    run_id: str
    rule: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Result:
    run_id: str
    rule: str
    ok: bool
    text: str
    task_id: str | None = None
    exit_code: int | None = None
    output: str = ""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Output:
    """Lines a running task printed since the last update."""

    run_id: str
    rule: str
    task_id: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


OutMessage = Progress | Result | Output | Text
