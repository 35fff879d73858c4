"""The name of each construct's kind, as the catalog and messages say it: `alert`, `notify`, `dedupe`, ..."""

from __future__ import annotations

from dsl.ast import (
    AlertTrigger,
    ButtonTrigger,
    CheckDisk,
    CommandTrigger,
    Dedupe,
    Emit,
    Escalate,
    EventTrigger,
    Group,
    MessageTrigger,
    MissingTrigger,
    Notify,
    RateLimit,
    Reply,
    RequireConfirmation,
    RequireRole,
    RunScript,
    ScheduleTrigger,
    Silence,
    SilenceWhere,
    TaskTrigger,
    Trigger,
)

_TRIGGERS: dict[type, str] = {
    AlertTrigger: "alert",
    CommandTrigger: "command",
    ButtonTrigger: "button",
    TaskTrigger: "task",
    ScheduleTrigger: "schedule",
    EventTrigger: "event",
    MessageTrigger: "message",
    MissingTrigger: "heartbeat",
}
_ACTIONS: dict[type, str] = {
    Notify: "notify",
    Reply: "reply",
    RunScript: "run",
    Emit: "emit",
    Silence: "silence",
    SilenceWhere: "silence",
    Escalate: "escalate",
}
_STAGES: dict[type, str] = {
    RequireRole: "require role",
    RequireConfirmation: "require confirmation",
    Dedupe: "dedupe",
    Group: "group",
    RateLimit: "rate limit",
    CheckDisk: "check disk",
}


def trigger_kind(trigger: Trigger) -> str:
    return _TRIGGERS[type(trigger)]


def action_kind(action: object) -> str:
    return _ACTIONS[type(action)]


def clause_kind(clause: object) -> str | None:
    """The stage a clause is (None for `when`, which is part of matching, not a stage)."""
    return _STAGES.get(type(clause))
