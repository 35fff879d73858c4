"""Herald's own chat as a connector: which sessions a conversation reaches, frames, and catch-up on reconnect.

Conversations, never sessions: a person's direct conversation is `@name` (every session of every account acting for
them), a room is `#name` (every linked session that joined it), and an account not linked to anyone is its own
conversation (so `/link` can be answered). A message reaches the sessions connected at the time; every frame carries
the outbox's `seq`, and a client that reconnects gets what it missed since the last `seq` it saw (sent as `since`
in its auth frame, else the last one the server wrote to that account before it disconnected).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.plugin import (
    AddressError,
    Capabilities,
    Conversation,
    Directory,
    IntegrationContext,
    KeyValue,
    Message,
    MessageRef,
)

log = logging.getLogger("herald.chat")

PLATFORM = "chat"
ROOM = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Our own socket: every state of a run is shown, not coalesced; clients drop a frame whose seq they already have.
# max_text: a 64 KB frame is nothing to a WebSocket, and an alert storm's digest of 500 alerts (about 100 characters
# a line) fits whole.
CAPABILITIES = Capabilities(buttons=True, edits=True, threads=False, formatting="plain", max_text=65_536,
                            edit_interval_s=0, dedupes=True)
CATCH_UP_LIMIT = 500
SHOWN_KEPT = 256
LOOK_BACK = 64
SLOW_CLIENT_BYTES = 1 << 20  # a session whose unsent frames pass this is dropped; it catches up on reconnect


def parse_address(text: str) -> str:
    """A room: `ops` or `#ops` (a-z, 0-9, _ and -); canonical `#ops`."""
    name = text.removeprefix("#")
    if not ROOM.fullmatch(name):
        raise AddressError("a Herald chat room is a name like 'ops' (a-z, 0-9, _ and -, at most 64 characters)")
    return f"#{name}"


_ROOM_SETS: dict[frozenset[str], frozenset[str]] = {}
ROOM_SETS_SHARED = 1024  # distinct combinations of rooms shared; clients name rooms, so past this each has its own


def room_set(rooms: Iterable[str]) -> frozenset[str]:
    """The rooms as a frozenset shared by every session in the same ones (a set of one room is 216 bytes, held by
    each idle session otherwise)."""
    key = frozenset(rooms)
    shared = _ROOM_SETS.get(key)
    if shared is None:
        if len(_ROOM_SETS) >= ROOM_SETS_SHARED:
            return key
        _ROOM_SETS[key] = shared = key
    return shared


@dataclass(eq=False, slots=True)  # slots: 10,000 idle sessions are 10,000 of these
class Session:
    id: str
    account: str  # "config:<principal>" for a configured token, else a device account (see engine.security.identity)
    principal: str | None  # who the account acts for when last checked; refreshed on every frame and every send
    rooms: frozenset[str]
    ws: web.WebSocketResponse = field(repr=False)
    transport: asyncio.WriteTransport | None = field(default=None, repr=False)  # to see how much is unsent
    last_seq: int = 0  # the newest outbox seq written to this session
    # Notifications already shown: a session in both a team's room and its member's own conversation gets one copy.
    # Made on first use: most sessions are idle, and each holds as little as it can.
    shown: OrderedDict[str, None] | None = field(default=None, repr=False)

    def first_sight(self, note: str) -> bool:
        if self.shown is None:
            self.shown = OrderedDict()
        elif note in self.shown:
            return False
        self.shown[note] = None
        if len(self.shown) > SHOWN_KEPT:
            self.shown.popitem(last=False)
        return True
    backlog: list[tuple[int, str]] | None = None  # frames held while the session is being caught up
    cork: Cork | None = field(default=None, repr=False)  # its connector's, once attached

    @property
    def conversation(self) -> str:
        """Where answers to this session's messages go: its person, else its own account."""
        return f"@{self.principal}" if self.principal else self.account

    def conversations(self) -> set[str]:
        chats = {self.account}
        if self.principal is not None:  # rooms are open to linked people only
            chats.add(f"@{self.principal}")
            chats.update(f"#{room}" for room in self.rooms)
        return chats

    async def send_json(self, frame: dict[str, Any]) -> bool:
        """A frame of its own (ack, error, welcome): not from the outbox, so not held during a catch-up."""
        if self.ws.closed:
            return False
        if self.cork is not None and self.transport is not None:
            self.cork.flush(self.transport)  # outbox frames written before this one go first
        try:
            await self.ws.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            return False
        return True

    def push(self, seq: int, text: str, frame: bytes | None = None) -> bool:
        """Write an outbox frame now, without waiting (a notification to 10,000 sessions is 10,000 writes of the
        same bytes); held while the session is being caught up; a session that stopped reading is dropped."""
        if self.backlog is not None:
            self.backlog.append((seq, text))
            return True
        transport = self.transport
        if self.ws.closed or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > SLOW_CLIENT_BYTES:
            log.warning("chat session %s reads too slowly; dropping it (it catches up when it reconnects)", self.id)
            transport.abort()  # its frames are in the outbox: a reconnect with `since` gets them
            return False
        frame = frame if frame is not None else ws_frame(text)
        if self.cork is not None:
            self.cork.write(transport, frame)
        else:
            transport.write(frame)
        self.last_seq = max(self.last_seq, seq)
        return True


class Cork:
    """Frames written to one session in one turn of the event loop leave in one write (one system call), not one
    each: a burst of alerts is hundreds of frames to the same client, and a send call per frame cost more than
    building them. The turn's frames are written at the end of it, in order."""

    def __init__(self) -> None:
        self._held: dict[asyncio.WriteTransport, list[bytes]] = {}

    def write(self, transport: asyncio.WriteTransport, frame: bytes) -> None:
        held = self._held.get(transport)
        if held is not None:
            held.append(frame)
            return
        if not self._held:
            asyncio.get_running_loop().call_soon(self.flush_all)
        self._held[transport] = [frame]

    def flush(self, transport: asyncio.WriteTransport) -> None:
        frames = self._held.pop(transport, None)
        if frames and not transport.is_closing():
            transport.write(b"".join(frames))

    def flush_all(self) -> None:
        held, self._held = self._held, {}
        for transport, frames in held.items():
            if not transport.is_closing():  # a session dropped meanwhile catches up when it reconnects
                transport.write(b"".join(frames))


class ChatConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, ctx: IntegrationContext) -> None:
        self._directory: Directory = ctx.directory
        self._ctx = ctx
        self._cursors: KeyValue = ctx.store("chat")
        self.sessions: dict[str, Session] = {}
        self._by_chat: dict[str, set[Session]] = {}
        self._cork = Cork()

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    # -- sessions ------------------------------------------------------------------------------------------------

    async def attach(self, session: Session, since: int | None) -> int:
        """Register a new session and catch it up; returns how many frames it was sent from before it connected."""
        if since is None:
            stored = await self._cursors.get(f"cursor/{session.account}")
            since = int(stored) if stored else None
        session.backlog = []  # frames sent while the catch-up is read are held, then given in order
        session.cork = self._cork
        self.sessions[session.id] = session
        self._index(session)
        missed = []
        if since is not None:
            # A notification's copies (a room's, a person's) are neighbours in the outbox: read a few rows before
            # `since` too, so a copy of something the client saw is not shown to it as news.
            rows = await self._ctx.history(PLATFORM, session.conversations(), after=max(0, since - LOOK_BACK),
                                           limit=CATCH_UP_LIMIT + LOOK_BACK)
            for item in rows:
                if item.seq <= since and (note := note_of(item.message)) is not None:
                    session.first_sight(note)
            missed = [item for item in rows if item.seq > since]
        backlog, session.backlog = session.backlog, None
        sent = 0
        for item in missed:
            note = note_of(item.message)
            if note is None or session.first_sight(note):
                sent += session.push(item.seq, render(item.message, item.seq, replay=True))
        newest = missed[-1].seq if missed else 0
        for seq, text in backlog:
            if seq > newest:
                session.push(seq, text)
        return sent

    async def detach(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        for chat in list(self._by_chat):
            self._by_chat[chat].discard(session)
            if not self._by_chat[chat]:
                del self._by_chat[chat]
        if session.last_seq:
            await self._cursors.put(f"cursor/{session.account}", str(session.last_seq))

    async def refresh(self, session: Session) -> str | None:
        """Ask again whom the session's account acts for (links change), and re-index it if that changed."""
        principal = await self._directory.resolve(PLATFORM, session.account)
        if principal != session.principal:
            for sessions in self._by_chat.values():
                sessions.discard(session)
            session.principal = principal
            self._index(session)
        return principal

    def _index(self, session: Session) -> None:
        for chat in session.conversations():
            self._by_chat.setdefault(chat, set()).add(session)

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.ws.close(code=1001, message=b"Herald is stopping")

    # -- the connector interface -----------------------------------------------------------------------------------

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        return await self._deliver(to.chat, render(message, seq), seq, str(seq), note_of(message))

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        return await self._deliver(ref.chat, render(message, seq, edits=ref.id), seq, ref.id, None)

    async def _deliver(self, chat: str, text: str, seq: int, message_id: str, note: str | None) -> MessageRef:
        reached, frame = 0, ws_frame(text)
        for session in list(self._by_chat.get(chat, ())):
            if not session.account.startswith("config:"):  # a device's link may have gone since it last spoke
                await self.refresh(session)
                if chat not in session.conversations():
                    continue
            if note is not None and not session.first_sight(note):
                reached += 1  # it has this notification already, through another conversation
                session.last_seq = max(session.last_seq, seq)
                continue
            reached += session.push(seq, text, frame)
        return MessageRef.model_construct(platform=PLATFORM, chat=chat, id=message_id, recipients=reached)


def ws_frame(text: str) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (RFC 6455 section 5.2), as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def note_of(message: Message) -> str | None:
    """What makes two notifications the same one (one rule's notification about one event)."""
    if message.kind != "notification":
        return None
    return f"{message.meta.get('event')}/{message.meta.get('rule')}/{message.text}"


def render(message: Message, seq: int, *, edits: str | None = None, replay: bool = False) -> str:
    """A message as the frame docs/chat-protocol.md describes, JSON-encoded once for every session."""
    meta = message.meta
    frame: dict[str, Any]
    if message.kind == "notification":
        frame = {"type": "notification", "event": meta.get("event"), "rule": meta.get("rule"),
                 "severity": message.severity, "text": message.text,
                 "buttons": [{"id": b.handle, "label": b.label, "action": b.action, "arg": b.arg}
                             for b in message.buttons],
                 "links": [{"label": link.label, "url": link.url} for link in message.links]}
    elif message.kind == "progress":
        frame = {"type": "progress", "in_reply_to": message.in_reply_to, "run": meta.get("run"),
                 "rule": meta.get("rule"), "state": meta.get("state"), "detail": meta.get("detail", "")}
    elif message.kind == "output":
        frame = {"type": "output", "in_reply_to": message.in_reply_to, "run": meta.get("run"),
                 "rule": meta.get("rule"), "task": meta.get("task"), "lines": meta.get("lines", [])}
    elif message.kind == "result":
        frame = {"type": "result", "in_reply_to": message.in_reply_to, "run": meta.get("run"),
                 "rule": meta.get("rule"), "ok": meta.get("ok"), "text": meta.get("text", message.text),
                 "task": meta.get("task"), "exit_code": meta.get("exit_code"), "output": meta.get("output", "")}
    else:
        frame = {"type": "reply", "in_reply_to": message.in_reply_to, "text": message.text}
    frame["seq"] = seq
    if edits is not None:
        frame["message"] = edits  # the seq of the message this one updates
        if message.kind == "notification":  # an alert's new state: clients that do not know it ignore it
            frame["type"] = "notification_edit"
    if replay:
        frame["replay"] = True
    return json.dumps(frame)
