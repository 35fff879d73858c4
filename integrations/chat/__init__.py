"""Herald's own chat over WebSocket at `/chat` (protocol: docs/chat-protocol.md), a connector like any other.

A client authenticates with a principal's chat token, may join rooms, sends commands (`/backup now`) and button
presses, and receives notifications with buttons, progress of each rule run and results on the same connection;
after a reconnect it gets what it missed (integrations.chat.connector).
"""

from __future__ import annotations

import json
import secrets
import sys

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field

from engine.plugin import CONFIG_ACCOUNT_PREFIX, ConnectorSpec, IntegrationContext, Manifest, Unload, device_account
from integrations.chat.connector import CAPABILITIES, PLATFORM, ROOM, ChatConnector, Session, parse_address, room_set
from integrations.chat.inbox import Inbox, error_frame, parse_frame

AUTH_TIMEOUT_S = 10.0
MIN_TOKEN_CHARS = 16
MAX_FRAME_BYTES = 64 * 1024
MAX_ROOMS = 32


class ChatConfig(BaseModel):
    """`[integrations.chat]`."""

    model_config = ConfigDict(extra="forbid")

    # Accept any other secret of 16+ characters as an anonymous device account that may only /link itself to a
    # person (and /help, /whoami), rate-limited. Off by default: a mistyped token is refused as unauthorised.
    device_accounts: bool = False
    # Who may join rooms (a team's `chat_rooms`): a linked person with one of these roles. Others are told which
    # rooms they were refused; a team's notifications still reach its members in their own conversation.
    room_roles: list[str] = Field(default_factory=lambda: ["admin", "operator"])


class ChatIntegration:
    manifest = Manifest(name="chat", description="Herald's own WebSocket chat at /chat",
                        provides=("trigger:command", "trigger:button", "trigger:message"), config_model=ChatConfig,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        connector = ChatConnector(ctx)
        detach = ctx.register_connector(connector)

        async def chat(request: web.Request) -> web.StreamResponse:
            # No permessage-deflate: frames are small JSON, and compressing each one for each session cost more CPU
            # per notification than building it (an alert storm is when CPU matters).
            ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME_BYTES, compress=False)
            await ws.prepare(request)
            hello = await _authenticate(ws, ctx, request)
            if hello is None:
                return ws
            # What an idle session holds, it holds 10,000 times: no tuple kept past this, no Inbox before a frame.
            session, since = hello
            del hello
            caught_up = await connector.attach(session, since)
            if caught_up:
                await session.send_json({"type": "caught_up", "count": caught_up})
            inbox: Inbox | None = None
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        if inbox is None:
                            inbox = Inbox(session, ctx, connector)
                        await inbox.put(parse_frame(msg.data))
            except BaseException:
                if inbox is not None:
                    inbox.abort()
                raise
            else:
                if inbox is not None:
                    await inbox.close()
            finally:
                await connector.detach(session)
            return ws

        ctx.routes.add_get("/chat", chat)

        async def unload() -> None:
            await detach()
            await connector.close_all()

        return unload


async def _authenticate(ws: web.WebSocketResponse, ctx: IntegrationContext,
                        request: web.Request) -> tuple[Session, int | None] | None:
    """Read the auth frame: the session, and the `seq` the client saw last (to catch up from), or None."""
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
                        or not all(isinstance(r, str) and ROOM.fullmatch(r) for r in rooms)):
        problem = f"rooms must be a list of at most {MAX_ROOMS} names like 'ops' (a-z, 0-9, _ and -)"
    since = frame.get("since") if isinstance(frame, dict) else None
    if not problem and since is not None and not (isinstance(since, int) and since >= 0):
        problem = "since must be the seq of the last frame you received (a whole number)"
    token = "" if problem else frame["token"]
    if not problem and len(token) < MIN_TOKEN_CHARS:
        problem = f"a token has at least {MIN_TOKEN_CHARS} characters"
    if problem:
        await ws.send_json(error_frame("unauthorized", problem))
        await ws.close(code=4401, message=b"unauthorized")
        return None
    configured = ctx.directory.authenticate_chat(token)
    config = ctx.integration_config("chat")
    if configured is None and not (isinstance(config, ChatConfig) and config.device_accounts):
        await ws.send_json(error_frame("unauthorized", "unknown token (device accounts are off: "
                                                       "[integrations.chat] device_accounts = true turns them on)"))
        await ws.close(code=4401, message=b"unauthorized")
        return None
    # A configured token is that principal's account (interned: its sessions share one string); any other secret
    # (where allowed) is a device account of its own, which can /link itself to a person.
    account = sys.intern(CONFIG_ACCOUNT_PREFIX + configured) if configured else device_account(token)
    principal = await ctx.directory.resolve(PLATFORM, account)
    roles = ctx.directory.roles_of(principal)
    room_roles = config.room_roles if isinstance(config, ChatConfig) else ChatConfig().room_roles
    may_join = principal is not None and bool(roles.intersection(room_roles))
    joined = sorted(set(rooms)) if may_join else []
    session = Session(id=secrets.token_hex(8), account=account, principal=principal, rooms=room_set(joined), ws=ws,
                      transport=request.transport)
    welcome = {"type": "welcome", "session": session.id, "account": account, "principal": principal,
               "roles": sorted(roles), "rooms": joined}
    if set(rooms) - set(joined):
        welcome["refused_rooms"] = sorted(set(rooms) - set(joined))
        welcome["rooms_note"] = (f"joining a room needs a linked person with role {' or '.join(room_roles)} "
                                 "([integrations.chat] room_roles)")
    await ws.send_json(welcome)
    return session, since


integration = ChatIntegration()
