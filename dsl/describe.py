"""A compiled rule's stages and actions in the words a rule file uses (`require role admin`, `run backup.sh
sandboxed timeout 1h`), for the dry run, the graph listing and the TUI: people read rules, not dataclasses.

`describe(step)` dispatches on the step's type through a registry; a plan type with no entry is a bug here, so it
raises instead of printing something made up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsl.plan import (
    DEFAULT_BUTTONS,
    ButtonSpec,
    CheckDiskStage,
    ConfirmStage,
    DedupeStage,
    EmitAction,
    EscalateAction,
    GroupStage,
    NotifyAction,
    RateLimitStage,
    ReplyAction,
    RequireRoleStage,
    RunAction,
    SilenceAction,
    SilenceWhereAction,
)
from dsl.printer import escalation_text
from dsl.values import format_duration, quote

_DESCRIBERS: dict[type, Callable[[Any], str]] = {}
_SIZE_UNITS = (("t", 1024 ** 4), ("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024))


def describe(step: object) -> str:
    """One stage or action of a compiled rule, as the rule language writes it."""
    describer = _DESCRIBERS.get(type(step))
    if describer is None:
        raise TypeError(f"no description for {type(step).__name__}")
    return describer(step)


def _describes(kind: type) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    def register(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        _DESCRIBERS[kind] = fn
        return fn

    return register


def format_size(n: int) -> str:
    """Bytes as the rule language writes a size: `536870912` -> `512m` (binary units, as `size_bytes` reads)."""
    for unit, size in _SIZE_UNITS:
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}b"


def _button(button: ButtonSpec) -> str:
    return f"{button.name} {button.arg}" if button.arg else button.name


@_describes(NotifyAction)
def _notify(action: NotifyAction) -> str:
    words = [f"notify {action.team}"]
    if action.template is not None:
        words.append(f"saying {quote(action.template)}")
    if action.buttons:
        words.append("with buttons " + ", ".join(_button(b) for b in action.button_list or DEFAULT_BUTTONS))
    return " ".join(words)


@_describes(ReplyAction)
def _reply(action: ReplyAction) -> str:
    return f"reply {quote(action.template)}"


@_describes(RunAction)
def _run(action: RunAction) -> str:
    words = [f"run {action.script} sandboxed"]
    if action.timeout_s is not None:
        words.append(f"timeout {format_duration(action.timeout_s)}")
    if action.retries:
        words.append(f"retry {action.retries} times")
    if action.backoff_s is not None:
        words.append(f"backoff {format_duration(action.backoff_s)}")
    if action.memory_bytes is not None:
        words.append(f"memory {format_size(action.memory_bytes)}")
    if action.network != "none":
        words.append(f"network {action.network}")
        if action.network_allow:
            words[-1] += " " + ", ".join(quote(a) for a in action.network_allow)
    if action.args:
        words.append("args " + " ".join(quote(a) for a in action.args))
    return " ".join(words)


@_describes(EmitAction)
def _emit(action: EmitAction) -> str:
    return f"emit {action.event}"


@_describes(SilenceAction)
def _silence(action: SilenceAction) -> str:
    duration = f"{{{action.duration_field}}}" if action.duration_field else format_duration(action.duration_s or 0)
    return f"silence alert by {action.by_field} for {duration}"


@_describes(SilenceWhereAction)
def _silence_where(action: SilenceWhereAction) -> str:
    duration = f"{{{action.duration_field}}}" if action.duration_field else format_duration(action.duration_s or 0)
    matchers = " and ".join(f"{label} = {quote(value)}" for label, value in action.matchers)
    return f"silence alert where {matchers} for {duration}"


@_describes(EscalateAction)
def _escalate(action: EscalateAction) -> str:
    return escalation_text([(step.target, step.after_s) for step in action.steps], action.repeat_s)


@_describes(RequireRoleStage)
def _require_role(stage: RequireRoleStage) -> str:
    return f"require role {stage.role}"


@_describes(ConfirmStage)
def _confirm(stage: ConfirmStage) -> str:
    by = f" by another {stage.role}" if stage.role else ""
    return f"require confirmation{by} within {format_duration(stage.within_s)}"


@_describes(DedupeStage)
def _dedupe(stage: DedupeStage) -> str:
    return f"dedupe by {stage.field} for {format_duration(stage.for_s)}"


@_describes(GroupStage)
def _group(stage: GroupStage) -> str:
    return f"group by {stage.field} within {format_duration(stage.within_s)}"


@_describes(RateLimitStage)
def _rate_limit(stage: RateLimitStage) -> str:
    per = f" per {stage.key}" if stage.key else ""
    return f"at most {stage.count} per {format_duration(stage.per_s)}{per}"


@_describes(CheckDiskStage)
def _check_disk(stage: CheckDiskStage) -> str:
    return f"check disk {quote(stage.path)} has {format_size(stage.free_bytes)} free"
