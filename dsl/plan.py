"""What a compiled rule does, as data: its stages (clauses run before the actions) and its action plan.

Frozen dataclasses the engine dispatches on by type. Stateful ones (confirmation, dedupe, group, rate limit,
silence, escalate) carry a `fingerprint` of the clause alone, so the engine can key their state by (rule name,
clause fingerprint) and a reload that leaves the clause unchanged keeps its counters and timers (DESIGN §3).
Templates are kept as written; the engine renders them with `dsl.render_template` when the rule runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from dsl.frozen import quick_init

# ---- actions ------------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """A button to send: its name (the action a press carries) and an optional argument such as `1h`."""

    name: str
    arg: str | None = None


# What `with buttons` alone sends.
DEFAULT_BUTTONS = (ButtonSpec("ack"), ButtonSpec("mute", "1h"))


@quick_init
@dataclass(frozen=True, slots=True)
class NotifyAction:
    """Send a notification to a team (or `@person`), optionally with a text template and buttons."""

    team: str
    buttons: bool
    template: str | None = None
    button_list: tuple[ButtonSpec, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class ReplyAction:
    """Answer in the conversation the event came from."""

    template: str


@quick_init
@dataclass(frozen=True, slots=True)
class RunAction:
    """Run a whitelisted script, always sandboxed; None means the engine's default for that limit.

    `args` are templates, one argv element each (never through a shell). `network` is "none", "default" or "allow".
    `retries` is how many more attempts a failed or timed-out run gets (0: none); the delay before the first
    retry is `backoff_s` (None: the engine's default) and doubles for each attempt after it.
    """

    script: str
    timeout_s: float | None
    memory_bytes: int | None = None
    network: str = "none"
    args: tuple[str, ...] = ()
    retries: int = 0
    backoff_s: float | None = None
    network_allow: tuple[str, ...] = ()  # with network "allow": the "HOST:PORT" entries, canonical


@quick_init
@dataclass(frozen=True, slots=True)
class EmitAction:
    """Raise the event `event` for the rules `on event <event>`."""

    event: str


@quick_init
@dataclass(frozen=True, slots=True)
class SilenceAction:
    """Silence alerts whose `by_field` equals this event's, for `duration_s` or the duration in `duration_field`."""

    by_field: str
    duration_s: float | None
    duration_field: str | None
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class SilenceWhereAction:
    """Silence every alert whose labels equal `matchers` (label, value template), now and arriving later, for
    `duration_s` or the duration in `duration_field`: a Herald silence, mirrored into Alertmanager."""

    matchers: tuple[tuple[str, str], ...]
    duration_s: float | None
    duration_field: str | None
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class EscalateStep:
    """Notify `target` once `after_s` has passed since the escalation was armed."""

    target: str
    after_s: float


@quick_init
@dataclass(frozen=True, slots=True)
class EscalateAction:
    """Each step in turn, unless the alert is acknowledged, muted or resolved by then; with `repeat_s`, the last
    step's target again every `repeat_s` until the alert is acknowledged or resolved."""

    steps: tuple[EscalateStep, ...]
    repeat_s: float | None = None
    fingerprint: str = ""


Action: TypeAlias = (NotifyAction | ReplyAction | RunAction | EmitAction | SilenceAction | SilenceWhereAction
                     | EscalateAction)

# ---- stages -------------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class RequireRoleStage:
    role: str
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class ConfirmStage:
    """Ask for a confirmation within `within_s`: by the caller, or by another person with `role`."""

    role: str | None
    within_s: float
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class DedupeStage:
    """Drop an event whose `field` value was seen within `for_s`."""

    field: str
    for_s: float
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class GroupStage:
    """Collect events with the same `field` value for `within_s`, then run once for the batch."""

    field: str
    within_s: float
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class RateLimitStage:
    """Run at most `count` times per `per_s` (per value of `key`, when given)."""

    count: int
    per_s: float
    key: str | None = None
    fingerprint: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class CheckDiskStage:
    """Before the actions: the disk holding `path` must have `free_bytes` free."""

    path: str
    free_bytes: int
    fingerprint: str = ""


Stage: TypeAlias = RequireRoleStage | ConfirmStage | DedupeStage | GroupStage | RateLimitStage | CheckDiskStage


@quick_init
@dataclass(frozen=True, slots=True)
class MissingSpec:
    """A dead man's switch: the rule runs when no firing alert named `name` arrived for `for_s`."""

    name: str
    for_s: float


@quick_init
@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a schedule rule fires: `how` is "every" (every_s), "daily" (at HH:MM) or "cron"; `zone` IANA or None."""

    how: str
    every_s: float | None = None
    at: str | None = None
    cron: str | None = None
    zone: str | None = None
