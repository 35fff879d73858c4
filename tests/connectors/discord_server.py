"""A fake Discord on loopback: the REST routes Herald's connector uses and a Gateway WebSocket, as documented.

Gateway (https://discord.com/developers/docs/topics/gateway):
  "Once connected to the Gateway, your app will receive a Hello (opcode 10) event that contains your connection's
  heartbeat interval (heartbeat_interval)." "Upon receiving the Hello event, your app should wait
  heartbeat_interval * jitter where jitter is any random value between 0 and 1, then send its first Heartbeat
  (opcode 1) event." "When sending a heartbeat, your app will need to include the last sequence number your app
  received in the d field." "If a client does not receive a heartbeat ACK between its attempts at sending
  heartbeats, this may be due to a failed or "zombied" connection. The client should immediately terminate the
  connection with any close code besides 1000 or 1001, then reconnect and attempt to Resume."
  "Once the new connection is opened, your app should send a Gateway Resume event using the session_id and sequence
  number mentioned above." "If successful, the Gateway will send the missed events in order, finishing with a
  Resumed event to signal event replay has finished and that all subsequent events will be new."
  "It's possible your app won't reconnect in time to Resume, in which case it will receive an Invalid Session
  (opcode 9) event. If the d field is set to false (which is most of the time), your app should disconnect. After
  disconnect, your app should create a new connection with your cached URL [...] then send an Identify."
  "The connection with your app will be closed if it passes invalid intents (4013 close code), or a privileged intent
  that hasn't been configured or approved for your app (4014 close code)." MESSAGE_CONTENT (1 << 15) is privileged:
  without it, guild messages arrive with an empty `content` (direct messages keep theirs).

Interactions (https://discord.com/developers/docs/interactions/receiving-and-responding):
  "Interaction tokens are valid for 15 minutes and can be used to send followup messages but you must send an
  initial response within 3 seconds of receiving the event. If the 3 second deadline is exceeded, the token will be
  invalidated." Responses are `POST /interactions/{id}/{token}/callback` with `type` 4 CHANNEL_MESSAGE_WITH_SOURCE,
  5 DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, 6 DEFERRED_UPDATE_MESSAGE (components), 7 UPDATE_MESSAGE; the original
  response is edited with `PATCH /webhooks/{application.id}/{interaction.token}/messages/@original`, follow-ups are
  `POST /webhooks/{application.id}/{interaction.token}`. A second response is 400 {"code": 40060, "message":
  "Interaction has already been acknowledged."}; a late one 404 {"code": 10062, "message": "Unknown interaction"}.

Rate limits (https://discord.com/developers/docs/topics/rate-limits):
  "X-RateLimit-Remaining - The number of remaining requests that can be made", "X-RateLimit-Reset-After - Total
  time (in seconds) of when the current rate limit bucket will reset." "In the case that a rate limit is exceeded,
  the API will return a HTTP 429 response code with a JSON body. Your application should rely on the Retry-After
  header or retry_after field to determine when to retry the request." Body: {"message": "You are being rate
  limited.", "retry_after": 64.57, "global": false}; a global one also has `X-RateLimit-Global: true`.
  Per-route buckets are counted per method, path and top-level resource (the channel); a call on a spent bucket
  gets that 429 and is counted in `early_calls` (a connector that honours the headers makes none).

HTTP interactions (same page): "If you want to receive Interactions via outgoing webhook, you can set your URL in
this field [Interactions Endpoint URL]." "When you attempt to save a URL, we will send a POST request to that URL
with a PING payload. The PING payload has a type: 1. So, to properly ACK the payload, return a 200 response with a
payload of type: 1". "Every Interaction is sent with the following headers: X-Signature-Ed25519 as a signature,
X-Signature-Timestamp as a timestamp [...] If the signature fails validation, respond with a 401 error code."
"When responding to an interaction received via webhook, your server can simply respond to the received POST
request." With `interactions_url` set, this fake signs (timestamp + body) with its own Ed25519 key and posts there.

Application commands (https://discord.com/developers/docs/interactions/application-commands; the rules and their
quotes are in discord_appcommands.py): `PUT /applications/{application.id}/commands` and `PUT /applications/
{application.id}/guilds/{guild.id}/commands` "Takes a list of application commands, overwriting the existing [...]
command list", checked as Discord checks it ("CHAT_INPUT command names and command option names must match the
following regex [...] If there is a lowercase variant of any letters used, you must use those", descriptions 1-100
characters, at most 25 options and 25 choices, required options first); a bad body is 400 {"code": 50035, "errors":
{...}, "message": "Invalid Form Body"} and changes nothing. Each overwrite is kept in `registrations` (scope,
names); a command keeps its id across overwrites while its name stays. `run_command` plays a person picking a
registered command's options.

Errors are Discord's JSON errors: 401 {"message": "401: Unauthorized", "code": 0} without `Authorization: Bot
<token>` (interaction callbacks and webhooks take their token in the path instead), 404 {"code": 10003, "message":
"Unknown Channel"}, 403 {"code": 50001, "message": "Missing Access"}, 404 10008 Unknown Message, 400 50035 Invalid
Form Body. Creating a message honours `nonce` + `enforce_nonce` (a repeat returns the first message, counted in
`repeats`), and, as on Discord, the bot's own messages are dispatched back to it as MESSAGE_CREATE.

The test side acts as people (`say`, `slash`, `run_command`, `press`), breaks things (`rate_limit_next`,
`refuse_names`, `drop`, `reconnect`, `invalidate`, `acks`) and reads what people see (`channel_messages`).
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from nacl.signing import SigningKey

from tests.connectors.discord_appcommands import form_errors, picked_options

API = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
MESSAGE_CONTENT, GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 15, 1 << 9, 1 << 12
EPHEMERAL, LOADING = 64, 128
TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token"


@dataclass
class Posted:
    id: str
    channel_id: str
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    flags: int = 0
    nonce: str | None = None
    reference: str | None = None
    interaction: str | None = None
    edits: int = 0

    def json(self, bot: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.id, "channel_id": self.channel_id, "type": 0, "content": self.content, "author": bot,
                "embeds": self.embeds, "components": self.components, "flags": self.flags, "tts": False,
                "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": None, "mentions": [],
                "attachments": [], "pinned": False, "mention_everyone": False, "mention_roles": [],
                **({"nonce": self.nonce} if self.nonce else {}),
                **({"message_reference": {"message_id": self.reference, "channel_id": self.channel_id}}
                   if self.reference else {})}

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for row in self.components for c in row.get("components", [])]


@dataclass
class Interaction:
    payload: dict[str, Any]
    created: float
    response: int | None = None
    original: str | None = None  # the message the response made (or the component's message)
    over_http: bool = False  # sent to the Interactions Endpoint URL rather than over the Gateway
    messages: set[str] = field(default_factory=set)


@dataclass
class Session:
    id: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    invalid: bool = False


@dataclass
class DiscordServer:
    application_id: str = "1000000000000000002"
    bot_id: str = "1000000000000000001"
    guild_id: str = "1300000000000000001"
    token: str = TOKEN
    heartbeat_interval_ms: int = 1000
    message_content_allowed: bool = True  # the privileged intent is enabled in the (fake) Developer Portal
    session_starts: dict[str, int] = field(default_factory=lambda: {"remaining": 1000, "reset_after": 0})
    bucket_limit: int = 1000  # requests per bucket per window (the tests of the gate lower them)
    bucket_window_s: float = 1.0
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, Posted] = field(default_factory=dict)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "global" or a guild id -> commands
    registrations: list[tuple[str, list[str]]] = field(default_factory=list)  # each overwrite taken: scope, names
    refuse_names: set[str] = field(default_factory=set)  # command names Discord would refuse (a test's stand-in)
    interactions: dict[str, Interaction] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    limited: list[str] = field(default_factory=list)  # the calls answered 429
    early_calls: int = 0
    repeats: int = 0
    early_identifies: int = 0  # IDENTIFYs sent while the session start limit was spent
    acks: bool = True  # answer heartbeats; False makes the connection a zombie
    resume_down: bool = False  # the session's resume_gateway_url refuses connections
    heartbeats: list[tuple[float, int | None]] = field(default_factory=list)
    identifies: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)  # the path of each Gateway connection
    hellos: list[float] = field(default_factory=list)  # when each HELLO was sent
    closes: list[int] = field(default_factory=list)  # close codes the bot closed with
    sessions: dict[str, Session] = field(default_factory=dict)
    current: Session | None = None
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # dispatches before any session
    _limits: list[tuple[str, float, bool]] = field(default_factory=list)
    _starts_reset_at: float = 0.0
    _buckets: dict[str, tuple[int, float]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _by_nonce: dict[str, str] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    interactions_url: str | None = None  # set: interactions go there (HTTP mode), not over the Gateway
    signing_key: SigningKey = field(default_factory=SigningKey.generate)  # the application's Ed25519 key
    http_answers: list[int] = field(default_factory=list)  # the endpoint's status for each interaction posted
    port: int = 0

    # -- people and places -----------------------------------------------------------------------------------------

    def snowflake(self) -> str:
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF))

    def guild_channel(self, channel: str) -> str:
        self.channels[channel] = {"id": channel, "type": 0, "guild_id": self.guild_id}
        return channel

    def dm_channel(self, user: str) -> str:
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipient"] == user:
                return str(channel["id"])
        channel_id = str(int(user) + 7_000_000_000_000_000)
        self.channels[channel_id] = {"id": channel_id, "type": 1, "recipient": user}
        return channel_id

    def channel_messages(self, channel: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.channel_id == channel]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @staticmethod
    def user(user_id: str) -> dict[str, Any]:
        return {"id": user_id, "username": f"user{user_id[-3:]}", "global_name": None, "discriminator": "0",
                "avatar": None}

    # -- what people do --------------------------------------------------------------------------------------------

    async def say(self, user: str, channel: str, text: str) -> str:
        """`user` types `text` in `channel`; dispatched as MESSAGE_CREATE. Returns the message id."""
        message_id = self.snowflake()
        await self._message_created({"id": message_id, "channel_id": channel, "author": self.user(user),
                                     "content": text, **self._place(channel, user), "type": 0, "flags": 0,
                                     "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": None,
                                     "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
                                     "attachments": [], "embeds": [], "pinned": False, "components": []})
        return message_id

    async def slash(self, user: str, channel: str, text: str) -> str:
        """`user` runs `/herald text:<text>` in `channel`; it must have been registered where it is used."""
        return await self.run_command(user, channel, "herald", text=text)

    async def run_command(self, user: str, channel: str, name: str, **picked: Any) -> str:
        """`user` runs the registered slash command /`name` in `channel` with the options picked (name=value), as
        the Discord client sends it: only a command registered where the channel is, with what its options allow."""
        guild = self.channels[channel].get("guild_id")
        scope = self.commands.get(guild, []) + self.commands.get("global", []) if guild else self.commands.get(
            "global", [])
        command = next((c for c in scope if c["name"] == name), None)
        assert command is not None, f"/{name} is not registered where {channel} can use it: {sorted(self.commands)}"
        data = {"id": command["id"], "name": name, "type": 1, **({"guild_id": guild} if guild else {}),
                "options": picked_options(command, picked)}
        return await self._interaction(user, channel, 2, data, None)

    async def press(self, user: str, message_id: str, custom_id: str) -> str:
        message = self.messages[message_id]
        assert any(b.get("custom_id") == custom_id for b in message.buttons), f"no button {custom_id!r}"
        return await self._interaction(user, message.channel_id, 3, {"custom_id": custom_id, "component_type": 2},
                                       message)

    async def _interaction(self, user: str, channel: str, kind: int, data: dict[str, Any],
                           message: Posted | None) -> str:
        interaction_id = self.snowflake()
        place = self._place(channel, user)
        payload: dict[str, Any] = {
            "id": interaction_id, "application_id": self.application_id, "type": kind, "data": data,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(40), "version": 1, "channel_id": channel,
            "channel": {"id": channel, "type": self.channels[channel]["type"]}, "locale": "en-US",
            "app_permissions": "562949953421311", "entitlements": [], "context": 0 if "guild_id" in place else 1,
            "authorizing_integration_owners": {"0": place.get("guild_id", "0")}}
        if "guild_id" in place:
            payload |= {"guild_id": place["guild_id"], "guild_locale": "en-US", "member": place["member"]}
        else:
            payload["user"] = self.user(user)
        if message is not None:
            payload["message"] = message.json(self._bot())
        found = Interaction(payload, time.monotonic(), original=message.id if message else None)
        self.interactions[interaction_id] = found
        if self.interactions_url is not None:
            await self._deliver(found)  # "you can only receive Interactions one of the two ways"
        else:
            await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id

    def _place(self, channel: str, user: str) -> dict[str, Any]:
        guild = self.channels[channel].get("guild_id")
        if guild is None:
            return {}
        return {"guild_id": guild, "member": {"user": self.user(user), "roles": [], "nick": None, "deaf": False,
                                              "mute": False, "joined_at": "2025-01-01T00:00:00+00:00",
                                              "permissions": "2248473465835073"}}

    def _bot(self) -> dict[str, Any]:
        return self.user(self.bot_id) | {"username": "Herald", "bot": True}

    # -- what the test breaks --------------------------------------------------------------------------------------

    def spend_session_starts(self, reset_after_ms: int) -> None:
        """No session starts left until `reset_after_ms` from now (`session_start_limit` in GET /gateway/bot)."""
        self.session_starts = {"remaining": 0, "reset_after": reset_after_ms}
        self._starts_reset_at = time.monotonic() + reset_after_ms / 1000

    def rate_limit_next(self, what: str, retry_after_s: float, *, global_: bool = False) -> None:
        """Answer the next `what` ("create": a new message, "edit": any message edit, "commands": a commands
        overwrite) with a 429."""
        self._limits.append((what, retry_after_s, global_))

    async def drop(self, code: int = 4000) -> None:
        """Close the bot's Gateway connection with `code` (4000 is resumable; 4004, 4010-4014 are not)."""
        if self.current is not None and self.current.ws is not None:
            ws, self.current.ws = self.current.ws, None
            await ws.close(code=code, message=b"closed by the test")

    async def reconnect(self) -> None:
        """Send RECONNECT (op 7): the bot should resume on a new connection."""
        if self.current is not None and self.current.ws is not None:
            await self.current.ws.send_json({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate(self) -> None:
        """End the session with INVALID_SESSION (op 9, d=false): the bot must identify again."""
        if self.current is not None:
            self.current.invalid = True
            if self.current.ws is not None:
                await self.current.ws.send_json({"op": 9, "d": False, "s": None, "t": None})

    # -- the Gateway -----------------------------------------------------------------------------------------------

    async def dispatch(self, kind: str, data: dict[str, Any]) -> None:
        """An event in the bot's session: sent now if it is connected, replayed on RESUME otherwise."""
        session = self.current
        if session is None or session.invalid:
            self.pending.append((kind, data))
            return
        session.seq += 1
        payload = {"op": 0, "t": kind, "s": session.seq, "d": data}
        session.events.append(payload)
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_json(payload)

    async def _message_created(self, message: dict[str, Any]) -> None:
        session = self.current
        intents = session.intents if session else self._last_intents()
        in_guild = "guild_id" in message
        if not intents & (GUILD_MESSAGES if in_guild else DIRECT_MESSAGES):
            return
        if in_guild and not intents & MESSAGE_CONTENT and message["author"]["id"] != self.bot_id:
            message = message | {"content": ""}  # what the bot may read without the privileged intent
        await self.dispatch("MESSAGE_CREATE", message)

    def _last_intents(self) -> int:
        return int(self.identifies[-1]["intents"]) if self.identifies else GUILD_MESSAGES | DIRECT_MESSAGES

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/resume" and self.resume_down:
            return web.Response(status=503, text="upstream unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append(request.path)
        if request.query.get("v") != "10" or request.query.get("encoding") != "json":
            await ws.close(code=4012, message=b"Invalid API version")
            return ws
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        self.hellos.append(time.monotonic())
        session: Session | None = None
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:
                self.heartbeats.append((time.monotonic(), data))
                if self.acks:
                    await ws.send_json({"op": 11})
            elif op == 2:
                session = await self._identify(ws, data)
            elif op == 6:
                session = await self._resume(ws, request.path, data)
            else:
                await ws.close(code=4001, message=b"Unknown opcode")
        if ws.close_code is not None and ws.close_code != 1006:
            self.closes.append(ws.close_code)
        if session is not None and session.ws is ws:
            session.ws = None
            # "When you close the connection to the gateway with close code 1000 or 1001, your session will be
            # invalidated"; any other code (or none) keeps it resumable for a while.
            session.invalid = ws.close_code in (1000, 1001)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        self.identifies.append(data | {"at": time.monotonic()})
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", -1))
        if not 0 <= intents < 1 << 26:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & MESSAGE_CONTENT and not self.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        if self.session_starts["remaining"] <= 0 and time.monotonic() < self._starts_reset_at:
            self.early_identifies += 1  # on Discord, this could reset the bot's token
        self.session_starts["remaining"] = max(0, self.session_starts["remaining"] - 1)
        session = Session(id=secrets.token_hex(16), intents=intents)
        self.sessions[session.id] = session
        self.current = session
        session.seq = 1
        await ws.send_json({"op": 0, "t": "READY", "s": 1, "d": {
            "v": 10, "user": self._bot(), "guilds": [{"id": self.guild_id, "unavailable": True}],
            "session_id": session.id, "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
            "application": {"id": self.application_id, "flags": 0}}})
        session.ws = ws
        pending, self.pending = self.pending, []
        for kind, event in pending:
            await self.dispatch(kind, event)
        return session

    async def _resume(self, ws: web.WebSocketResponse, path: str, data: dict[str, Any]) -> Session | None:
        self.resumes.append({**data, "path": path})
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token or session is None or session.invalid:
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return None
        seq = data.get("seq") or 0
        if seq > session.seq:
            await ws.close(code=4007, message=b"Invalid seq.")
            return None
        self.current = session
        index = 0
        while index < len(session.events):  # the missed events in order (including any that arrive meanwhile)
            if session.events[index]["s"] > seq:
                await ws.send_json(session.events[index])
            index += 1
        session.ws = ws
        session.seq += 1
        session.events.append({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
        await ws.send_json(session.events[-1])
        return session

    # -- REST ------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._rules])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume", self._gateway)
        app.router.add_get(API + "/gateway/bot", self._gateway_bot)
        app.router.add_put(API + "/applications/{app}/commands", self._put_commands)
        app.router.add_put(API + "/applications/{app}/guilds/{guild}/commands", self._put_commands)
        app.router.add_post(API + "/channels/{channel}/messages", self._create_message)
        app.router.add_patch(API + "/channels/{channel}/messages/{message}", self._edit_message)
        app.router.add_post(API + "/users/@me/channels", self._open_dm)
        app.router.add_post(API + "/interactions/{id}/{token}/callback", self._callback)
        app.router.add_patch(API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_edit)
        app.router.add_post(API + "/webhooks/{app}/{token}", self._followup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> DiscordServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _rules(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Authorization, injected 429s and per-route buckets, as Discord applies them before a route runs."""
        if not request.path.startswith(API):
            return await handler(request)
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        self.calls.append(f"{request.method} {route}")
        tokened = "/interactions/" in request.path or "/webhooks/" in request.path
        if not tokened and request.headers.get("Authorization") != f"Bot {self.token}":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        what = {("POST", "/channels/{channel}/messages"): "create", ("POST", "/webhooks/{app}/{token}"): "create",
                ("PATCH", "/channels/{channel}/messages/{message}"): "edit",
                ("PATCH", "/webhooks/{app}/{token}/messages/{message}"): "edit",
                ("PUT", "/applications/{app}/commands"): "commands",
                ("PUT", "/applications/{app}/guilds/{guild}/commands"): "commands"}.get(
            (request.method, route.removeprefix(API)))
        for n, (kind, retry_after, global_) in enumerate(self._limits):
            if kind == what:
                del self._limits[n]
                self.limited.append(f"{request.method} {route}")
                return _too_many(retry_after, global_)
        major = request.match_info.get("channel") or request.match_info.get("token") or ""
        bucket = f"{request.method} {route} {major}"
        remaining, reset_at = self._buckets.get(bucket, (self.bucket_limit, 0.0))
        now = time.monotonic()
        if now >= reset_at:
            remaining, reset_at = self.bucket_limit, now + self.bucket_window_s
        if remaining <= 0:
            self.early_calls += 1
            self.limited.append(f"{request.method} {route}")
            return _too_many(round(reset_at - now, 3), False)
        self._buckets[bucket] = (remaining - 1, reset_at)
        response = await handler(request)
        response.headers.update({"X-RateLimit-Limit": str(self.bucket_limit),
                                 "X-RateLimit-Remaining": str(remaining - 1),
                                 "X-RateLimit-Reset": f"{time.time() + reset_at - now:.3f}",
                                 "X-RateLimit-Reset-After": f"{reset_at - now:.3f}",
                                 "X-RateLimit-Bucket": f"{abs(hash(route)):x}"})
        return response

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.session_starts["remaining"] <= 0 and now >= self._starts_reset_at:
            self.session_starts = {"remaining": 1000, "reset_after": 0}
        reset_after = max(0, round((self._starts_reset_at - now) * 1000))
        return web.json_response({"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": self.session_starts["remaining"], "reset_after": reset_after,
            "max_concurrency": 1}})

    async def _put_commands(self, request: web.Request) -> web.Response:
        if request.match_info["app"] != self.application_id:
            return _error(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        if guild is not None and guild != self.guild_id:
            return _error(404, 10004, "Unknown Guild")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 50109, "The request body contains invalid JSON.")
        errors = form_errors(body)
        refused = {str(n): {"name": {"_errors": [{"code": "APPLICATION_COMMAND_INVALID_NAME",
                                                  "message": "Command name is invalid"}]}}
                   for n, c in enumerate(body if isinstance(body, list) else []) if c.get("name") in self.refuse_names}
        errors = (errors or {}) | refused or None
        if errors is not None:
            return web.json_response({"code": 50035, "errors": errors, "message": "Invalid Form Body"}, status=400)
        scope = guild or "global"
        before = {c["name"]: c for c in self.commands.get(scope, [])}
        commands = []
        for command in body:
            kept = before.get(command["name"])
            commands.append({"type": 1, **command, "id": kept["id"] if kept else self.snowflake(),
                             "application_id": self.application_id, "version": self.snowflake(),
                             **({"guild_id": guild} if guild else {})})
        self.commands[scope] = commands
        self.registrations.append((scope, [c["name"] for c in commands]))
        return web.json_response(commands)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        if self.channels[channel].get("forbidden"):
            return _error(403, 50001, "Missing Access")
        body = await request.json()
        problem = _invalid(body)
        if problem:
            return problem
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce") and nonce in self._by_nonce:
            self.repeats += 1
            return web.json_response(self.messages[self._by_nonce[nonce]].json(self._bot()))
        reference = (body.get("message_reference") or {}).get("message_id")
        posted = await self._post(channel, body, nonce=nonce, reference=reference)
        if nonce is not None:
            self._by_nonce[nonce] = posted.id
        return web.json_response(posted.json(self._bot()))

    async def _post(self, channel: str, body: dict[str, Any], **extra: Any) -> Posted:
        posted = Posted(self.snowflake(), channel, body.get("content") or "", body.get("embeds") or [],
                        body.get("components") or [], int(body.get("flags") or 0), **extra)
        self.messages[posted.id] = posted
        if not posted.flags & EPHEMERAL:
            await self._message_created(posted.json(self._bot()) | self._place(channel, self.bot_id))
        return posted

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel, message_id = request.match_info["channel"], request.match_info["message"]
        if channel not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        posted = self.messages.get(message_id)
        if posted is None or posted.channel_id != channel or posted.flags & EPHEMERAL:
            return _error(404, 10008, "Unknown Message")
        return await self._apply_edit(posted, await request.json())

    async def _apply_edit(self, posted: Posted, body: dict[str, Any], *, counts: bool = True) -> web.Response:
        problem = _invalid(body, edit=True)
        if problem:
            return problem
        for key in ("content", "embeds", "components"):
            if key in body:
                setattr(posted, key, body[key] if body[key] is not None else ([] if key != "content" else ""))
        posted.flags &= ~LOADING
        posted.edits += 1 if counts else 0
        return web.json_response(posted.json(self._bot()))

    async def _open_dm(self, request: web.Request) -> web.Response:
        recipient = str((await request.json()).get("recipient_id", ""))
        if not recipient.isdigit() or recipient.startswith("9"):  # ids starting with 9: nobody, in these tests
            return _error(400, 50033, "Invalid Recipient(s)")
        channel = self.dm_channel(recipient)
        return web.json_response({"id": channel, "type": 1, "recipients": [self.user(recipient)]})

    async def _callback(self, request: web.Request) -> web.Response:
        found = self.interactions.get(request.match_info["id"])
        if found is None or found.payload["token"] != request.match_info["token"] \
                or time.monotonic() - found.created > 3.0:
            return _error(404, 10062, "Unknown interaction")
        if found.over_http:
            return _error(400, 40060, "Interaction has already been acknowledged.")  # answered by HTTP only
        return await self._respond(found, await request.json())

    async def _respond(self, found: Interaction, body: dict[str, Any]) -> web.Response:
        if found.response is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        kind, data = body.get("type"), body.get("data") or {}
        channel = found.payload["channel_id"]
        if kind == 4:
            posted = await self._post(channel, data, interaction=found.payload["id"])
            found.original = posted.id
        elif kind == 5:
            posted = await self._post(channel, {"content": "", "flags": LOADING | int(data.get("flags") or 0)},
                                      interaction=found.payload["id"])
            found.original = posted.id
        elif kind in (6, 7) and found.payload["type"] == 3:
            if kind == 7:
                await self._apply_edit(self.messages[str(found.original)], data)
        else:
            return _error(400, 50035, "Invalid Form Body: interaction response type")
        found.response = kind
        if found.original:
            found.messages.add(found.original)
        return web.Response(status=204)

    # -- HTTP interactions: Discord posting to the app's Interactions Endpoint URL ---------------------------------

    def sign(self, timestamp: str, raw: bytes) -> str:
        return self.signing_key.sign(timestamp.encode() + raw).signature.hex()

    @property
    def public_key(self) -> str:
        return self.signing_key.verify_key.encode().hex()

    async def post_interaction(self, raw: bytes, *, signature: str | None = None,
                               timestamp: str | None = None) -> tuple[int, Any]:
        """POST `raw` to the endpoint as Discord does: signed over timestamp + body (or with the given signature)."""
        assert self.interactions_url is not None
        timestamp = timestamp or str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)",
                   "X-Signature-Ed25519": signature or self.sign(timestamp, raw), "X-Signature-Timestamp": timestamp}
        async with aiohttp.ClientSession() as http, http.post(self.interactions_url, data=raw,
                                                              headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def _deliver(self, found: Interaction) -> None:
        found.over_http = True
        status, body = await self.post_interaction(json.dumps(found.payload).encode())
        self.http_answers.append(status)
        if status == 200 and time.monotonic() - found.created <= 3.0:
            await self._respond(found, body)

    def _by_token(self, request: web.Request) -> Interaction | None:
        if request.match_info["app"] != self.application_id:
            return None
        return next((i for i in self.interactions.values() if i.payload["token"] == request.match_info["token"]),
                    None)

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        found = self._by_token(request)
        if found is None:
            return _error(404, 10015, "Unknown Webhook")
        wanted = request.match_info["message"]
        message_id = found.original if wanted == "@original" else wanted
        if found.response is None or message_id not in found.messages:
            return _error(404, 10008, "Unknown Message")
        posted = self.messages[str(message_id)]
        return await self._apply_edit(posted, await request.json(), counts=not posted.flags & LOADING)

    async def _followup(self, request: web.Request) -> web.Response:
        found = self._by_token(request)
        if found is None:
            return _error(404, 10015, "Unknown Webhook")
        if found.response is None:
            return _error(404, 10062, "Unknown interaction")
        body = await request.json()
        problem = _invalid(body)
        if problem:
            return problem
        posted = await self._post(found.payload["channel_id"], body, interaction=found.payload["id"])
        found.messages.add(posted.id)
        if request.query.get("wait") == "true":
            return web.json_response(posted.json(self._bot()))
        return web.Response(status=204)


def _invalid(body: dict[str, Any], *, edit: bool = False) -> web.Response | None:
    """Discord's checks of a message body that matter here: not empty, buttons well formed."""
    if not edit and not (body.get("content") or body.get("embeds") or body.get("components")):
        return _error(400, 50006, "Cannot send an empty message")
    if len(body.get("content") or "") > 2000:
        return _error(400, 50035, "Invalid Form Body: content: Must be 2000 or fewer in length.")
    rows = body.get("components") or []
    for row in rows:
        buttons = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            return _error(400, 50035, "Invalid Form Body: components: an action row holds 1-5 components")
        for button in buttons:
            link = button.get("style") == 5
            if button.get("type") != 2 or not 1 <= len(button.get("label", "")) <= 80 \
                    or link != ("url" in button) or link == ("custom_id" in button) \
                    or len(button.get("custom_id", "")) > 100:
                return _error(400, 50035, f"Invalid Form Body: components: bad button {button}")
    if len(rows) > 5:
        return _error(400, 50035, "Invalid Form Body: components: at most 5 action rows")
    return None


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"message": message, "code": code}, status=status)


def _too_many(retry_after: float, global_: bool) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after))), "X-RateLimit-Scope": "global" if global_ else "user"}
    if global_:
        headers["X-RateLimit-Global"] = "true"
    else:
        headers |= {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{retry_after:.3f}", "X-RateLimit-Bucket": "abcd1234"}
    return web.json_response({"message": "You are being rate limited.", "retry_after": retry_after,
                              "global": global_}, status=429, headers=headers)
