"""Turning what the runtime says into the neutral `Message`, and fitting a message to what a platform can show.

Written once for every platform: a connector only ever sees a message that already fits its `Capabilities`
(numbered replies in place of buttons, text cut to the platform's length with a note saying so).
"""

from __future__ import annotations

from typing import Any

from dsl.values import human_duration
from engine.delivery.message import Button, Capabilities, Message
from engine.delivery.outlets import AlertStatus, Notification, OutMessage, Output, Progress, Result, Text

TRUNCATED = "\n[… {n} more characters not shown]"
CHOICES_META = "choices"  # a message's numbered choices (button handles), where buttons became text
# Every button a notification was sent with, those hidden now included (an Unacknowledge until the alert is
# acknowledged): `following` shows the ones that apply as the alert moves on, back and forth.
ALL_BUTTONS_META = "all_buttons"


def hidden_actions(*, acknowledged: bool, muted: bool) -> frozenset[str]:
    """The alert-state buttons that do not apply now: Acknowledge once acknowledged, Unacknowledge until then, Mute
    while muted."""
    return frozenset({"ack" if acknowledged else "unack", *(("mute",) if muted else ())})


def all_buttons(message: Message) -> tuple[Button, ...]:
    """Every button the notification was sent with, shown now or not."""
    stored = message.meta.get(ALL_BUTTONS_META)
    if not isinstance(stored, list):
        return message.buttons
    return tuple(Button.model_validate(button) for button in stored)


def shown_buttons(buttons: tuple[Button, ...], status: AlertStatus) -> tuple[Button, ...]:
    """The buttons that apply to an alert in this state (none once it is resolved)."""
    if status.resolved_at is not None:
        return ()
    gone = hidden_actions(acknowledged=bool(status.acknowledged_by), muted=status.muted_until is not None)
    return tuple(b for b in buttons if b.action not in gone)


def to_message(message: Notification | OutMessage, in_reply_to: str | None = None) -> Message:
    # Built from the runtime's own typed records, so no validation is needed (model_construct: a hot path).
    if isinstance(message, Notification):
        buttons = tuple(Button.model_construct(handle=b.id, label=b.label, action=b.action, arg=b.arg)
                        for b in message.buttons)
        meta: dict[str, Any] = {"event": message.event_id, "rule": message.rule, "alert": message.alert}
        if any(b.action == "unack" for b in buttons):  # a button hidden for now: kept, for `following`
            meta[ALL_BUTTONS_META] = [b.model_dump() for b in buttons]
            buttons = shown_buttons(buttons, AlertStatus())
        return Message.model_construct(kind="notification", text=message.text, severity=message.severity,
                                       buttons=buttons, links=message.links, meta=meta)
    if isinstance(message, Progress):
        text = f"{message.rule}: {message.state}" + (f" - {message.detail}" if message.detail else "")
        return Message(kind="progress", text=text, in_reply_to=in_reply_to,
                       meta={"run": message.run_id, "rule": message.rule, "state": message.state,
                             "detail": message.detail})
    if isinstance(message, Output):
        return Message(kind="output", text=message.text, in_reply_to=in_reply_to,
                       meta={"run": message.run_id, "rule": message.rule, "task": message.task_id,
                             "lines": list(message.lines)})
    if isinstance(message, Result):
        text = message.text + (f"\n{message.output.rstrip()}" if message.output.strip() else "")
        return Message(kind="result", text=text, in_reply_to=in_reply_to,
                       meta={"run": message.run_id, "rule": message.rule, "ok": message.ok, "text": message.text,
                             "task": message.task_id, "exit_code": message.exit_code, "output": message.output})
    assert isinstance(message, Text)
    return Message(kind="reply", text=message.text, in_reply_to=in_reply_to)


def following(message: Message, status: AlertStatus) -> Message:
    """A notification as it reads now that its alert has moved on: its text, then one line per thing that happened,
    and only the buttons that apply now (none once the alert is resolved). Hidden buttons are left out here, before
    `fit`, so a platform's numbered choices count only the ones shown."""
    lines = status_lines(status)
    buttons = shown_buttons(all_buttons(message), status)
    if not lines and buttons == message.buttons:
        return message
    return message.model_copy(update={"text": "\n".join([message.text, *lines]), "buttons": buttons})


def status_lines(status: AlertStatus) -> list[str]:
    """One line per thing that happened: `✅ Acknowledged by alice at 02:14 UTC`, `↩ Unacknowledged by bob at 02:20
    UTC` (the latest, in time order with an acknowledgement after it), `🔕 Muted by bob until 03:14 UTC`,
    `⏫ Escalated to managers at 02:19 UTC`, `✔ Resolved at 02:40 UTC, after 26m`."""
    lines = []
    if status.unacknowledged_by:  # an unacknowledgement clears the acknowledgement, so any shown one is newer
        lines.append(f"↩ Unacknowledged by {status.unacknowledged_by}{_at(status.unacknowledged_at)}")
    if status.acknowledged_by:
        lines.append(f"✅ Acknowledged by {status.acknowledged_by}{_at(status.acknowledged_at)}")
    if status.muted_until is not None and status.muted_in == "Herald":  # a silence by labels (herald_silences)
        lines.append(f"🔕 Silenced by {status.muted_by or 'someone'} until {status.muted_until:%H:%M} UTC")
    elif status.muted_until is not None and status.muted_in:
        lines.append(f"🔕 Silenced in {status.muted_in} by {status.muted_by or 'someone'} "
                     f"until {status.muted_until:%H:%M} UTC")
    elif status.muted_until is not None and status.muted_until_resolved:
        lines.append(f"🔕 Muted by {status.muted_by or 'someone'} until resolved")
    elif status.muted_until is not None:
        lines.append(f"🔕 Muted by {status.muted_by or 'someone'} until {status.muted_until:%H:%M} UTC")
    for step in status.escalations:
        again = f", {step.times} times" if step.times > 1 else ""
        lines.append(f"⏫ Escalated to {step.target}{_at(step.at)}{again}")
    if status.resolved_at is not None:
        lasted = ""
        if status.fired_at is not None and status.resolved_at >= status.fired_at:
            lasted = f", after {human_duration((status.resolved_at - status.fired_at).total_seconds())}"
        lines.append(f"✔ Resolved{_at(status.resolved_at)}{lasted}")
    return lines


def _at(when: object) -> str:
    return f" at {when:%H:%M} UTC" if when is not None else ""


def fit(message: Message, capabilities: Capabilities) -> Message:
    """The message as this platform can show it."""
    text, changes = message.text, dict[str, Any]()
    if message.buttons and not capabilities.buttons:
        choices = " · ".join(f"{n} {b.label}" for n, b in enumerate(message.buttons, start=1))
        text += f"\n\nReply with a number: {choices}"
        changes["buttons"] = ()
        changes["meta"] = {**message.meta, CHOICES_META: [b.handle for b in message.buttons]}
    if len(text) > capabilities.max_text:
        keep = capabilities.max_text - len(TRUNCATED.format(n=len(text)))
        text = text[:keep] + TRUNCATED.format(n=len(text) - keep)
    if text != message.text:
        changes["text"] = text
    return message.model_copy(update=changes) if changes else message
