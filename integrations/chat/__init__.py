"""Herald's own chat over WebSocket at `/chat` (protocol: docs/chat-protocol.md).

A client authenticates with a principal's chat token, may join rooms, sends commands (`/backup now`) and button
presses, and receives notifications with buttons, progress of each rule run and results on the same connection.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from engine.core.events import ReplyTo
from engine.core.ids import new_id
from engine.delivery.outlets import Audience, Notification, OutMessage, Output, Progress, Result, Text
from engine.plugin.discovery import IntegrationContext, Manifest, Unload
from engine.security.identity import CONFIG_ACCOUNT_PREFIX, Directory, device_account
from integrations.chat.inbox import Inbox, error_frame, parse_frame

AUTH_TIMEOUT_S = 10.0
MIN_TOKEN_CHARS = 16
MAX_FRAME_BYTES = 64 * 1024
_ROOM = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_ROOMS = 32


@dataclass
class Session:
    id: str
    account: str  # "config:<principal>" for a configured token, else a device account (see engine.identity)
    principal: str | None  # who the account acted for when last checked; refreshed on every frame
    rooms: frozenset[str]
    ws: web.WebSocketResponse = field(repr=False)

    async def send(self, frame: dict[str, object]) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_json(frame)
        except (ConnectionError, RuntimeError):
            return False
        return True


class ChatOutlet:
    platform = "chat"

    def __init__(self, directory: Directory) -> None:
        self.sessions: dict[str, Session] = {}
        self._directory = directory

    async def notify(self, audience: Audience, message: Notification | Text) -> int:
        frame = _notification_frame(message) if isinstance(message, Notification) else _text_frame(message, None)
        targets = []
        for session in list(self.sessions.values()):
            # Rooms are open to linked people only; an unlinked device sees nothing but its own replies.
            session.principal = await self._directory.resolve("chat", session.account)
            if session.principal is not None and (
                    session.principal in audience.members or session.rooms.intersection(audience.rooms)):
                targets.append(session)
        if len(targets) == 1:  # the common case; gather would wrap it in a task of its own
            return int(await targets[0].send(frame))
        return sum(await asyncio.gather(*(s.send(frame) for s in targets)))

    async def reply(self, to: ReplyTo, message: OutMessage) -> bool:
        session = self.sessions.get(to.chat)
        if session is None:
            return False
        if isinstance(message, Progress):
            frame: dict[str, object] = {"type": "progress", "in_reply_to": to.message_id, "run": message.run_id,
                                        "rule": message.rule, "state": message.state, "detail": message.detail}
        elif isinstance(message, Output):
            frame = {"type": "output", "in_reply_to": to.message_id, "run": message.run_id, "rule": message.rule,
                     "task": message.task_id, "lines": list(message.lines)}
        elif isinstance(message, Result):
            frame = {"type": "result", "in_reply_to": to.message_id, "run": message.run_id, "rule": message.rule,
                     "ok": message.ok, "text": message.text, "task": message.task_id,
                     "exit_code": message.exit_code, "output": message.output}
        else:
            frame = _text_frame(message, to.message_id)
        return await session.send(frame)


def _notification_frame(note: Notification) -> dict[str, object]:
    return {"type": "notification", "event": note.event_id, "rule": note.rule, "severity": note.severity,
            "text": note.text,
            "buttons": [{"id": b.id, "label": b.label, "action": b.action, "arg": b.arg} for b in note.buttons]}


def _text_frame(message: Text, in_reply_to: str | None) -> dict[str, object]:
    return {"type": "reply", "in_reply_to": in_reply_to, "text": message.text}


class ChatIntegration:
    manifest = Manifest(name="chat", description="Herald's own WebSocket chat at /chat",
                        provides=("chat", "trigger:command", "trigger:button"))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        outlet = ChatOutlet(ctx.directory)
        detach = ctx.register_outlet(outlet)

        async def chat(request: web.Request) -> web.StreamResponse:
            # No permessage-deflate: frames are small JSON, and compressing each one for each session cost more CPU
            # per notification than building it (an alert storm is when CPU matters).
            ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME_BYTES, compress=False)
            await ws.prepare(request)
            session = await _authenticate(ws, ctx)
            if session is None:
                return ws
            outlet.sessions[session.id] = session
            inbox = Inbox(session, ctx)
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        await inbox.put(parse_frame(msg.data))
            except BaseException:
                inbox.abort()
                raise
            else:
                await inbox.close()
            finally:
                outlet.sessions.pop(session.id, None)
            return ws

        ctx.routes.add_get("/chat", chat)

        async def unload() -> None:
            detach()
            for session in list(outlet.sessions.values()):
                await session.ws.close(code=1001, message=b"Herald is stopping")

        return unload


async def _authenticate(ws: web.WebSocketResponse, ctx: IntegrationContext) -> Session | None:
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        await ws.send_json(error_frame("unauthorized", f"send an auth frame within {AUTH_TIMEOUT_S:.0f} s"))
        await ws.close(code=4401, message=b"unauthorized")
        return None
    problem, frame = "", {}
    if msg.type != WSMsgType.TEXT:
        problem = "the first frame must be a JSON auth frame"
    else:
        try:
            frame = json.loads(msg.data)
        except ValueError:
            problem = "the first frame is not valid JSON"
    if not problem and (not isinstance(frame, dict) or frame.get("type") != "auth"
                        or not isinstance(frame.get("token"), str)):
        problem = 'the first frame must be {"type": "auth", "token": "..."}'
    rooms = frame.get("rooms", []) if isinstance(frame, dict) else []
    if not problem and (not isinstance(rooms, list) or len(rooms) > MAX_ROOMS
                        or not all(isinstance(r, str) and _ROOM.fullmatch(r) for r in rooms)):
        problem = f"rooms must be a list of at most {MAX_ROOMS} names like 'ops' (a-z, 0-9, _ and -)"
    token = "" if problem else frame["token"]
    if not problem and len(token) < MIN_TOKEN_CHARS:
        problem = f"a token has at least {MIN_TOKEN_CHARS} characters"
    if problem:
        await ws.send_json(error_frame("unauthorized", problem))
        await ws.close(code=4401, message=b"unauthorized")
        return None
    configured = ctx.directory.authenticate_chat(token)
    # A configured token is that principal's account; any other secret is a device account of its own, which
    # can /link itself to a person.
    account = CONFIG_ACCOUNT_PREFIX + configured if configured else device_account(token)
    principal = await ctx.directory.resolve("chat", account)
    session = Session(id=new_id(), account=account, principal=principal, rooms=frozenset(rooms), ws=ws)
    await ws.send_json({"type": "welcome", "session": session.id, "account": account, "principal": principal,
                        "roles": sorted(ctx.directory.roles_of(principal)), "rooms": sorted(session.rooms)})
    return session


integration = ChatIntegration()
