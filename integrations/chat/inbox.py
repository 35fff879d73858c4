"""One chat session's incoming frames, handed to the engine in order and in batches.

The session's reader parses each frame as it arrives (`parse_frame`) and queues what it asks for; one task per
session (`Inbox`) takes everything queued so far and hands it on in order. Consecutive messages go to the engine in a
single `submit`, so they share one journal commit: a client that sends many commands no longer waits a commit per
command before its next frame is even read, and its acks still come back in the order it sent the frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.errors import AuthError
from engine.core.events import Actor, CommandData, Event, MessageData, ReplyTo
from engine.intake.commands import CommandTextError, parse_command
from engine.plugin.discovery import Busy, IntegrationContext

if TYPE_CHECKING:  # the session lives in the package's __init__, which imports this module
    from integrations.chat import Session

log = logging.getLogger("herald.chat")

MAX_MESSAGE_CHARS = 4096
QUEUE_LIMIT = 256  # frames read but not yet handed on; beyond it the reader waits, and TCP pushes back on the client


@dataclass(frozen=True)
class Message:
    """A chat message: a command (`/backup now`) or plain text."""

    command: CommandData | None
    text: str
    client_id: str | None


@dataclass(frozen=True)
class Press:
    button: str
    client_id: str | None


@dataclass(frozen=True)
class Refusal:
    """A frame the reader could not accept; its error goes out in its place in the order."""

    frame: dict[str, object]


Item = Message | Press | Refusal


def error_frame(code: str, message: str, in_reply_to: object = None) -> dict[str, object]:
    return {"type": "error", "code": code, "message": message, "in_reply_to": in_reply_to}


def parse_frame(raw: str) -> Item:
    """What a client frame asks for, or why it cannot be accepted."""
    try:
        frame = json.loads(raw)
    except ValueError:
        return Refusal(error_frame("bad_request", "frame is not valid JSON"))
    if not isinstance(frame, dict):
        return Refusal(error_frame("bad_request", "frame must be a JSON object"))
    client_id = frame.get("id")
    if client_id is not None and not (isinstance(client_id, str) and len(client_id) <= 128):
        return Refusal(error_frame("bad_request", "id must be a string of at most 128 characters"))
    kind = frame.get("type")
    if kind == "message" and isinstance(frame.get("text"), str):
        try:
            command = parse_command(frame["text"])
        except CommandTextError as exc:
            return Refusal(error_frame("bad_request", str(exc), client_id))
        return Message(command, frame["text"][:MAX_MESSAGE_CHARS], client_id)
    if kind == "press" and isinstance(frame.get("button"), str):
        return Press(frame["button"], client_id)
    return Refusal(error_frame("bad_request", 'expected a "message" frame with "text" or a "press" frame with '
                                              '"button"', client_id))


class Inbox:
    """The queue between a session's reader and the engine, with the one task that empties it in order."""

    def __init__(self, session: Session, ctx: IntegrationContext) -> None:
        self._session = session
        self._ctx = ctx
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(QUEUE_LIMIT)
        self._task = asyncio.ensure_future(self._run())

    async def put(self, item: Item) -> None:
        await self._queue.put(item)

    async def close(self) -> None:
        """Hand on what was read, then stop (the client hung up; what it sent before still counts)."""
        await self._queue.put(None)
        await asyncio.shield(self._task)

    def abort(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            stop = None in items
            try:
                await self._hand_on([item for item in items if item is not None])
            except Exception:  # a bug; the session must keep working for the next frames
                log.exception("chat session %s: handing on %d frames failed", self._session.id, len(items))
            if stop:
                return

    async def _hand_on(self, items: Sequence[Item]) -> None:
        messages: list[Message] = []
        for item in items:
            if isinstance(item, Message):
                messages.append(item)
                continue
            await self._submit(messages)
            messages = []
            if isinstance(item, Press):
                await self._press(item)
            else:
                await self._session.send(item.frame)
        await self._submit(messages)

    async def _actor(self) -> Actor:
        session = self._session
        session.principal = await self._ctx.directory.resolve("chat", session.account)  # links change; ask each time
        return Actor(platform="chat", account=session.account, principal=session.principal)

    def _reply_to(self, client_id: str | None) -> ReplyTo:
        return ReplyTo(platform="chat", chat=self._session.id, message_id=client_id)

    async def _submit(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        session, actor = self._session, await self._actor()
        events = [Event(source="chat", actor=actor, reply_to=self._reply_to(m.client_id),
                        data=m.command or MessageData(text=m.text, user=session.principal, chat=session.id))
                  for m in messages]
        try:
            await self._ctx.submit(events, acknowledge=self._acknowledge(messages))
        except Busy:
            for m in messages:
                await session.send(error_frame("busy", "Herald is busy; try again in a moment", m.client_id))

    async def _press(self, press: Press) -> None:
        try:
            await self._ctx.press(press.button, await self._actor(), self._reply_to(press.client_id),
                                  acknowledge=self._acknowledge([press]))
        except AuthError as exc:
            await self._session.send(error_frame("button_refused", f"button refused: {exc}", press.client_id))
        except Busy:
            await self._session.send(error_frame("busy", "Herald is busy; try again in a moment", press.client_id))

    def _acknowledge(self, items: Sequence[Message | Press]) -> Callable[[Sequence[Event]], Awaitable[None]]:
        async def acknowledge(events: Sequence[Event]) -> None:  # durable by now: the journal committed them
            for item, event in zip(items, events, strict=True):
                await self._session.send({"type": "ack", "id": item.client_id, "event": event.id})

        return acknowledge
