"""Commands, messages and button presses from people: one path for every platform, Herald's chat and the TUI.

A connector turns what its platform delivered into `Incoming` items (who, where answers go, the text or the pressed
button's handle) and hands them to `Intake.take` in the order they arrived. Consecutive messages go to the engine in
one submit, so they share one journal commit; each accepted item is acknowledged (after it is durable, before any
rule sees it), each refused one gets its `Outcome` with a code and a sentence for the person, in order.

Where a platform cannot show buttons, notifications carry numbered choices instead (engine.delivery.render), and a
reply that is just such a number presses that button.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from engine.core.errors import AuthError, Busy
from engine.core.events import Actor, Event, MessageData, ReplyTo, utcnow
from engine.core.ids import derived_id
from engine.intake.commands import CommandTextError, parse_command

MAX_MESSAGE_CHARS = 4096
BUSY_TEXT = "Herald is busy; try again in a moment"
COMMANDS_ONLY_TEXT = "Commands start with '/'; try /help."

RefusalCode = Literal["busy", "bad_request", "not_command", "button_refused"]


def busy_text(exc: Busy) -> str:
    """What a person is told when Herald cannot take their command now, and why."""
    return f"{BUSY_TEXT} ({exc})"


@dataclass(frozen=True)
class Incoming:
    """One thing a person sent: a message (`text`) or a press (`button`, the handle the platform carried)."""

    actor: Actor  # the principal may be left out: the intake resolves it from the platform account
    reply_to: ReplyTo
    text: str | None = None
    button: str | None = None
    # The platform's own id for what was delivered (a Telegram update id, a Slack envelope id), with its time: a
    # platform that delivers it again (after a reconnect or a restart) then gets the same event, journaled once.
    key: str | None = None
    when: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one item: accepted as `event`, or refused with a `code` and a `text` for the person."""

    item: Incoming
    event: Event | None = None
    code: RefusalCode | None = None
    text: str = ""

    @property
    def accepted(self) -> bool:
        return self.event is not None


Submit = Callable[..., Awaitable[None]]  # engine.submit(events, acknowledge=...)
Press = Callable[..., Awaitable[Event]]  # engine.press(handle, actor, reply_to, acknowledge=...)
Choices = Callable[[ReplyTo], Awaitable[list[str]]]  # the numbered choices last offered in a conversation
Resolve = Callable[[str, str], Awaitable[str | None]]  # (platform, account) -> the principal it acts for
Answer = Callable[[Outcome], Awaitable[None]]


class Intake:
    def __init__(self, *, submit: Submit, press: Press, choices: Choices, resolve: Resolve) -> None:
        self._submit = submit
        self._press = press
        self._choices = choices
        self._resolve = resolve

    async def take(self, items: Sequence[Incoming], *, accepted: Answer | None = None, refused: Answer,
                   commands_only: bool = False) -> None:
        """Hand `items` on in order. `accepted` is awaited for each accepted item once it is durable (before any
        rule runs on it), `refused` for each refused one, in the items' order. `commands_only`: plain text is
        refused with a hint instead of becoming a message event (the TUI's command line)."""
        batch: list[tuple[Incoming, Event]] = []
        for item in items:
            if item.actor.principal is None:
                principal = await self._resolve(item.actor.platform, item.actor.account)
                if principal is not None:
                    item = replace(item, actor=item.actor.model_copy(update={"principal": principal}))
            if item.text is not None:
                parsed = await self._parse(item, commands_only)
                if isinstance(parsed, Outcome):
                    await self._flush(batch, accepted, refused)
                    batch = []
                    await (self._press_one(parsed.item, accepted, refused) if parsed.item.button is not None
                           else refused(parsed))
                else:
                    batch.append((item, parsed))
                continue
            await self._flush(batch, accepted, refused)
            batch = []
            await self._press_one(item, accepted, refused)
        await self._flush(batch, accepted, refused)

    async def _parse(self, item: Incoming, commands_only: bool) -> Event | Outcome:
        text = item.text or ""
        try:
            command = parse_command(text)
        except CommandTextError as exc:
            return Outcome(item, code="bad_request", text=str(exc))
        if command is None:
            handle = await self._choice(item, text)
            if handle is not None:
                return Outcome(replace(item, text=None, button=handle))
            if commands_only:
                return Outcome(item, code="not_command", text=COMMANDS_ONLY_TEXT)
        data = command or MessageData(text=text[:MAX_MESSAGE_CHARS], user=item.actor.principal,
                                      chat=item.reply_to.chat)
        if item.key is not None:
            when = item.when or utcnow()
            return Event(id=derived_id(when, "intake", item.actor.platform, item.key), time=when,
                         source=item.actor.platform, actor=item.actor, reply_to=item.reply_to, data=data)
        return Event(source=item.actor.platform, actor=item.actor, reply_to=item.reply_to, data=data)

    async def _choice(self, item: Incoming, text: str) -> str | None:
        """The button a bare number picks among the choices last offered in this conversation, if any."""
        stripped = text.strip()
        if not stripped.isdigit() or len(stripped) > 2:
            return None
        choices = await self._choices(item.reply_to)
        index = int(stripped) - 1
        return choices[index] if 0 <= index < len(choices) else None

    async def _flush(self, batch: list[tuple[Incoming, Event]], accepted: Answer | None, refused: Answer) -> None:
        if not batch:
            return

        async def acknowledge(events: Sequence[Event]) -> None:
            if accepted is not None:
                for item, event in batch:
                    await accepted(Outcome(item, event))

        try:
            await self._submit([event for _, event in batch], acknowledge=acknowledge)
        except Busy as exc:
            for item, _ in batch:
                await refused(Outcome(item, code="busy", text=busy_text(exc)))

    async def _press_one(self, item: Incoming, accepted: Answer | None, refused: Answer) -> None:
        assert item.button is not None

        async def acknowledge(events: Sequence[Event]) -> None:
            if accepted is not None:
                await accepted(Outcome(item, events[0]))

        try:
            await self._press(item.button, item.actor, item.reply_to, acknowledge=acknowledge)
        except AuthError as exc:
            await refused(Outcome(item, code="button_refused", text=f"button refused: {exc}"))
        except Busy as exc:
            await refused(Outcome(item, code="busy", text=busy_text(exc)))
