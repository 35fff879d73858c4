"""One chat session's incoming frames, handed to the engine's intake in order and in batches.

The session's reader parses each frame as it arrives (`parse_frame`) and queues what it asks for; one task per
session (`Inbox`) takes everything queued so far and hands it to the intake (engine.intake: the one path every
platform shares), which journals consecutive messages in one commit. Acks and refusals come back in the order the
client sent its frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.plugin import Actor, Incoming, IntegrationContext, Outcome, ReplyTo, UnreadableInput, load_json
from integrations.chat.connector import PLATFORM, ChatConnector, Session

log = logging.getLogger("herald.chat")

# A session linked to no person (a device account) may send this many frames at once, then one per interval: enough
# to /link and ask /whoami, not enough to fill the journal and the audit.
UNLINKED_BURST = 5
UNLINKED_INTERVAL_S = 2.0
QUEUE_LIMIT = 256  # frames read but not yet handed on; beyond it the reader waits, and TCP pushes back on the client
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class Said:
    """A message or a press, as the client framed it."""

    client_id: str | None
    text: str | None = None
    button: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A frame the reader could not accept; its error goes out in its place in the order."""

    frame: dict[str, object]


Item = Said | Refusal


def error_frame(code: str, message: str, in_reply_to: object = None) -> dict[str, object]:
    return {"type": "error", "code": code, "message": message, "in_reply_to": in_reply_to}


def parse_frame(raw: str) -> Item:
    """What a client frame asks for, or why it cannot be accepted."""
    try:
        frame = load_json(raw)  # also refuses what could not be journaled (a lone surrogate), frame by frame
    except UnreadableInput as exc:
        return Refusal(error_frame("bad_request", f"frame is not valid JSON: {exc}"))
    if not isinstance(frame, dict):
        return Refusal(error_frame("bad_request", "frame must be a JSON object"))
    client_id = frame.get("id")
    if client_id is not None and not (isinstance(client_id, str) and len(client_id) <= MAX_ID_CHARS):
        return Refusal(error_frame("bad_request", f"id must be a string of at most {MAX_ID_CHARS} characters"))
    kind = frame.get("type")
    if kind == "message" and isinstance(frame.get("text"), str):
        return Said(client_id, text=frame["text"])
    if kind == "press" and isinstance(frame.get("button"), str):
        return Said(client_id, button=frame["button"])
    return Refusal(error_frame("bad_request", 'expected a "message" frame with "text" or a "press" frame with '
                                              '"button"', client_id))


class Inbox:
    """The frames between a session's reader and the intake, and the one task that hands them on in order.

    A session gets its Inbox with its first frame, and the task exists only while there are frames to hand on: an
    idle session (most of them) holds no task and no queue, at most an empty list (an empty deque would allocate its
    first block of 64 slots at once, about 700 bytes, 7 MiB of 10,000 sessions)."""

    __slots__ = ("_session", "_ctx", "_connector", "_items", "_task", "_allowance", "_since")

    def __init__(self, session: Session, ctx: IntegrationContext, connector: ChatConnector) -> None:
        self._session = session
        self._ctx = ctx
        self._connector = connector
        self._items: list[Item] = []
        self._task: asyncio.Task[None] | None = None
        self._allowance = float(UNLINKED_BURST)
        self._since = time.monotonic()

    async def put(self, item: Item) -> None:
        if isinstance(item, Said) and self._session.principal is None and not self._allowed():
            item = Refusal(error_frame("rate_limited", f"an account linked to no person may send one message every "
                                                       f"{UNLINKED_INTERVAL_S:g} s; /link it to act for someone",
                                       item.client_id))
        self._items.append(item)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        if len(self._items) >= QUEUE_LIMIT:  # stop reading until the engine caught up; TCP pushes back
            await asyncio.shield(self._task)

    def _allowed(self) -> bool:
        now = time.monotonic()
        self._allowance = min(UNLINKED_BURST, self._allowance + (now - self._since) / UNLINKED_INTERVAL_S)
        self._since = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def close(self) -> None:
        """Hand on what was read, then stop (the client hung up; what it sent before still counts)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            while self._items:
                items, self._items = self._items, []
                try:
                    await self._hand_on(items)
                except Exception:  # a bug; the session must keep working for the next frames
                    log.exception("chat session %s: handing on %d frames failed", self._session.id, len(items))
        finally:
            self._task = None

    async def _hand_on(self, items: Sequence[Item]) -> None:
        said: list[Said] = []
        for item in items:
            if isinstance(item, Said):
                said.append(item)
                continue
            await self._take(said)
            said = []
            await self._session.send_json(item.frame)
        await self._take(said)

    async def _take(self, said: Sequence[Said]) -> None:
        if not said:
            return
        session = self._session
        await self._connector.refresh(session)  # links change; ask each time
        actor = Actor(platform=PLATFORM, account=session.account, principal=session.principal)
        incoming = [Incoming(actor, ReplyTo(platform=PLATFORM, chat=session.conversation, message_id=s.client_id),
                             text=s.text, button=s.button) for s in said]
        await self._ctx.intake.take(incoming, accepted=self._accepted, refused=self._refused)

    async def _accepted(self, outcome: Outcome) -> None:  # durable by now: the journal committed it
        assert outcome.event is not None
        await self._session.send_json({"type": "ack", "id": outcome.item.reply_to.message_id,
                                       "event": outcome.event.id})

    async def _refused(self, outcome: Outcome) -> None:
        await self._session.send_json(error_frame(outcome.code or "bad_request", outcome.text,
                                                  outcome.item.reply_to.message_id))
