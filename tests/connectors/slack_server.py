"""A fake Slack on loopback: the Web API methods Herald uses, Socket Mode, signed HTTP deliveries, token rotation.

What it implements, from Slack's documentation:

Web API (https://api.slack.com/web): "POST https://slack.com/api/{method}", arguments form-encoded or as JSON with
"Authorization: Bearer xoxb-...". "The response is a JSON object with a top-level boolean property ok ... If ok is
false, the error property will contain a short machine-readable error code", with HTTP 200. Rate limits
(https://api.slack.com/docs/rate-limits): "your app will receive a HTTP 429 Too Many Requests error, and a
Retry-After HTTP header containing the number of seconds until you can retry". A revoked or unknown token is
`invalid_auth`; an expired rotating token is `token_expired`. Methods: chat.postMessage (a member id as `channel`
posts in the app's DM with them, and the answer names that D... channel), chat.update (channel + ts),
chat.postEphemeral (channel + user; answered with `message_ts`), apps.connections.open, oauth.v2.access.

Socket Mode (https://api.slack.com/apis/socket-mode): "call the apps.connections.open method ... with your app-level
token ... The response contains a WebSocket URL"; on connecting, Slack sends `{"type": "hello", ...}`; events arrive
in envelopes `{"envelope_id", "type": "events_api" | "interactive" | "slash_commands", "payload",
"accepts_response_payload", "retry_attempt", "retry_reason"}`; "Your app must respond to every envelope with an
acknowledgement ... `{"envelope_id": ...}` ... within 3 seconds", and Slack retries what was not acknowledged;
"the `disconnect` event ... `reason: refresh_requested`" asks the app to reconnect. This fake re-delivers every
envelope not acknowledged when a socket closes, on the next connection, with `retry_attempt` + 1 and
`retry_reason: "timeout"` and a NEW envelope_id (the strictest case: Herald must recognise a re-delivery by the
payload's own ids). `hold_acks` makes it ignore acks, as if each was lost with its socket.

Signed HTTP (https://api.slack.com/authentication/verifying-requests-from-slack): "X-Slack-Signature ... is created
by combining the signing secret with the body of the request ... using a standard HMAC-SHA256 keyed hash": `v0=` +
hex HMAC-SHA256 over "v0:{X-Slack-Request-Timestamp}:{raw body}". Slash commands and interactivity are form-encoded
(interactivity as `payload=<JSON>`), events are JSON. An event not answered 200 in time is retried with
`X-Slack-Retry-Num` and `X-Slack-Retry-Reason` (`lose_answers` throws an answer away to make that happen).

Token rotation (https://api.slack.com/authentication/rotation): "oauth.v2.access ... grant_type=refresh_token ...
returns a new access token and a new refresh token"; access tokens "expire every 12 hours" (`expires_in`), and a
refresh token works once (a second use is `invalid_refresh_token`).

Interaction answers: `response_url` (https://api.slack.com/interactivity/handling#message_responses): "post ...
up to 5 times within 30 minutes", JSON with `response_type: "ephemeral"` shows it only to the person.

The test side drives it (`slash`, `event_message`, `block_action`, `rate_limit_next`, `drop_sockets`,
`expire_access_tokens`) and reads what people see (`in_chat`, with edits applied).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
from aiohttp import web

TEAM = "T0HERALD"
APP = "A0HERALD"
BOT_USER = "U0BOTUSER"


@dataclass
class Posted:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    attachments: list[dict[str, Any]]
    ephemeral_for: str | None = None
    edits: int = 0

    def shown_text(self) -> str:
        """What a person reads: the blocks (in attachments too), or the fallback text where there are none."""
        parts = [_block_text(b) for b in self.blocks]
        parts += [_block_text(b) for a in self.attachments for b in a.get("blocks") or ()]
        parts = [p for p in parts if p]
        return "\n".join(parts) if parts else self.text

    def buttons(self) -> list[tuple[str, str]]:
        blocks = self.blocks + [b for a in self.attachments for b in a.get("blocks") or ()]
        return [(e["text"]["text"], e.get("value") or e.get("action_id", ""))
                for b in blocks if b.get("type") == "actions" for e in b["elements"] if "url" not in e]


@dataclass
class SlackServer:
    bot_token: str = "xoxb-static-token"
    app_token: str = "xapp-1-app-token"
    signing_secret: str = "8f742231b10e8888abcd99yyyzzz85a5"
    client_id: str = "4123121235.9872358710"
    client_secret: str = "e1b9e11dfcd19c1982d5de12921e17e8c"
    expires_in: int = 43200
    mode: str = "socket"  # or "http": how Slack delivers to the app
    request_base: Callable[[], str] | None = None  # HTTP mode: the app's base URL (Herald's http port)
    messages: list[Posted] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    token_errors: list[str] = field(default_factory=list)
    refreshes: list[str] = field(default_factory=list)  # refresh tokens presented, in order
    issued_access: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    deliveries: list[tuple[str, int]] = field(default_factory=list)  # HTTP mode: (path, status)
    hold_acks: bool = False
    connections: int = 0
    port: int = 0
    _access: dict[str, float] = field(default_factory=dict)  # rotating access token -> expiry (unix seconds)
    _refresh: set[str] = field(default_factory=set)  # refresh tokens not used yet
    _tickets: set[str] = field(default_factory=set)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _unacked: dict[str, dict[str, Any]] = field(default_factory=dict)  # envelope id -> envelope
    _limited: list[float] = field(default_factory=list)
    _lose_answers: int = 0
    _responses: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # id -> (channel, user, uses)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    # -- what the test does --------------------------------------------------------------------------------------

    def issue_refresh_token(self) -> str:
        """The refresh token an OAuth install with rotation hands out (the one a user puts in the config)."""
        token = f"xoxe-1-{uuid.uuid4().hex[:12]}"
        self._refresh.add(token)
        return token

    def expire_access_tokens(self) -> None:
        self._access = dict.fromkeys(self._access, 0.0)

    def rate_limit_next(self, retry_after_s: float, times: int = 1) -> None:
        self._limited.extend([retry_after_s] * times)

    def lose_answers(self, n: int = 1) -> None:
        self._lose_answers += n

    async def drop_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def send_disconnect(self) -> None:
        for ws in list(self._sockets):
            await ws.send_json({"type": "disconnect", "reason": "refresh_requested",
                                "debug_info": {"host": "applink-fake"}})

    @property
    def unacked(self) -> list[dict[str, Any]]:
        return list(self._unacked.values())

    def in_chat(self, channel: str) -> list[Posted]:
        return [m for m in self.messages if m.channel == channel]

    async def slash(self, user: str, channel: str, command: str, text: str) -> None:
        response_id = uuid.uuid4().hex[:10]
        self._responses[response_id] = (channel, user, 0)
        payload = {"token": "verification-token", "team_id": TEAM, "team_domain": "herald", "channel_id": channel,
                   "channel_name": "directmessage" if channel.startswith("D") else "ops", "user_id": user,
                   "user_name": user.lower(), "command": command, "text": text, "api_app_id": APP,
                   "is_enterprise_install": "false",
                   "response_url": f"{self.url}/commands/{TEAM}/{response_id}",
                   "trigger_id": f"{int(time.time())}.{next(self._ts)}.{uuid.uuid4().hex[:16]}"}
        await self._deliver("slash_commands", payload)

    async def event_message(self, user: str, channel: str, text: str, *, mention: bool = False) -> str:
        ts = self._new_ts()
        channel_type = "im" if channel.startswith("D") else "channel"
        event = {"client_msg_id": str(uuid.uuid4()), "type": "message", "text": text, "user": user, "ts": ts,
                 "team": TEAM, "channel": channel, "event_ts": ts, "channel_type": channel_type}
        await self._deliver("events_api", self._callback(event))
        if mention:  # a message that mentions the app arrives a second time, as app_mention
            await self._deliver("events_api", self._callback({**event, "type": "app_mention"}))
        return ts

    async def block_action(self, user: str, message: Posted, value: str) -> None:
        response_id = uuid.uuid4().hex[:10]
        self._responses[response_id] = (message.channel, user, 0)
        payload = {"type": "block_actions", "user": {"id": user, "username": user.lower(), "team_id": TEAM},
                   "api_app_id": APP, "token": "verification-token",
                   "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                                 "is_ephemeral": False},
                   "trigger_id": f"{int(time.time())}.{next(self._ts)}.{uuid.uuid4().hex[:16]}",
                   "team": {"id": TEAM, "domain": "herald"}, "channel": {"id": message.channel, "name": "ops"},
                   "message": {"type": "message", "ts": message.ts, "text": message.text, "blocks": message.blocks},
                   "response_url": f"{self.url}/actions/{TEAM}/{response_id}",
                   "actions": [{"action_id": value, "block_id": "b1", "value": value, "type": "button",
                                "text": {"type": "plain_text", "text": "?"}, "action_ts": f"{time.time():.6f}"}]}
        await self._deliver("interactive", payload)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # -- serving ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._method)
        app.router.add_get("/link/", self._link)
        app.router.add_post("/{kind:commands|actions}/{team}/{id}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _callback(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"token": "verification-token", "team_id": TEAM, "api_app_id": APP, "event": event,
                "type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
                "event_time": int(time.time()), "authorizations": [
                    {"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER, "is_bot": True,
                     "is_enterprise_install": False}],
                "is_ext_shared_channel": False, "event_context": f"4-{event['type']}-{TEAM}-{event['channel']}"}

    # -- Web API -------------------------------------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        if request.content_type == "application/json":
            args = await request.json()
        else:
            args = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        if method == "oauth.v2.access":
            return self._oauth(request, args)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if method == "apps.connections.open":
            if bearer != self.app_token:
                return _fail("invalid_auth")
            ticket = uuid.uuid4().hex
            self._tickets.add(ticket)
            return _ok({"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP}"})
        problem = self._check_bot_token(bearer)
        if problem is not None:
            self.token_errors.append(problem)
            return _fail(problem)
        if self._limited and method in ("chat.postMessage", "chat.update"):
            retry_after = self._limited.pop(0)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": f"{retry_after:g}"})
        handler = {"chat.postMessage": self._post, "chat.update": self._update,
                   "chat.postEphemeral": self._ephemeral, "auth.test": self._auth_test}.get(method)
        if handler is None:
            return _fail("unknown_method")
        return handler(args)

    def _check_bot_token(self, bearer: str) -> str | None:
        if not bearer:
            return "not_authed"
        if bearer == self.bot_token:
            return None
        expiry = self._access.get(bearer)
        if expiry is None:
            return "invalid_auth"
        return "token_expired" if expiry <= time.time() else None

    def _oauth(self, request: web.Request, args: dict[str, Any]) -> web.Response:
        basic = request.headers.get("Authorization", "")
        client = (args.get("client_id"), args.get("client_secret"))
        if basic.startswith("Basic "):
            client = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))  # type: ignore[assignment]
        if client != (self.client_id, self.client_secret):
            return _fail("invalid_client_id")
        if args.get("grant_type") != "refresh_token":
            return _fail("invalid_grant_type")
        presented = str(args.get("refresh_token") or "")
        self.refreshes.append(presented)
        if presented not in self._refresh:
            return _fail("invalid_refresh_token")
        self._refresh.discard(presented)  # single use
        access, refresh = f"xoxe.xoxb-1-{uuid.uuid4().hex[:16]}", f"xoxe-1-{uuid.uuid4().hex[:16]}"
        self._access[access] = time.time() + self.expires_in
        self.issued_access.append(access)
        self._refresh.add(refresh)
        return _ok({"app_id": APP, "authed_user": {"id": "U0INSTALLER"}, "scope": "chat:write,commands",
                    "token_type": "bot", "access_token": access, "bot_user_id": BOT_USER, "refresh_token": refresh,
                    "expires_in": self.expires_in, "team": {"id": TEAM, "name": "Herald"}, "enterprise": None,
                    "is_enterprise_install": False})

    def _auth_test(self, args: dict[str, Any]) -> web.Response:
        return _ok({"url": "https://herald.slack.com/", "team": "Herald", "user": "herald", "team_id": TEAM,
                    "user_id": BOT_USER, "bot_id": "B0HERALD"})

    def _post(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel") or "")
        if not channel:
            return _fail("channel_not_found")
        if channel[0] in "UW":
            channel = "D" + channel[1:]  # the app's DM with that member
        if "MISSING" in channel:
            return _fail("channel_not_found")
        problem = _check_message(args)
        if problem:
            return _fail(problem)
        posted = Posted(channel, self._new_ts(), str(args.get("text") or ""), _json(args.get("blocks")),
                        _json(args.get("attachments")))
        self.messages.append(posted)
        return _ok({"channel": channel, "ts": posted.ts,
                    "message": {"type": "message", "bot_id": "B0HERALD", "text": posted.text, "ts": posted.ts}})

    def _update(self, args: dict[str, Any]) -> web.Response:
        found = [m for m in self.messages if m.ts == args.get("ts") and m.ephemeral_for is None]
        if not found:
            return _fail("message_not_found")
        if found[0].channel != args.get("channel"):
            return _fail("channel_not_found")
        problem = _check_message(args)
        if problem:
            return _fail(problem)
        posted = found[0]
        posted.text = str(args.get("text") or "")
        posted.blocks, posted.attachments = _json(args.get("blocks")), _json(args.get("attachments"))
        posted.edits += 1
        return _ok({"channel": posted.channel, "ts": posted.ts, "text": posted.text})

    def _ephemeral(self, args: dict[str, Any]) -> web.Response:
        posted = Posted(str(args.get("channel")), self._new_ts(), str(args.get("text") or ""),
                        _json(args.get("blocks")), _json(args.get("attachments")), ephemeral_for=str(args.get("user")))
        self.messages.append(posted)
        return _ok({"message_ts": posted.ts})

    async def _respond(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if key not in self._responses:
            return web.Response(status=404, text="expired_url")
        channel, user, uses = self._responses[key]
        if uses >= 5:
            return web.Response(status=404, text="used_url")
        self._responses[key] = (channel, user, uses + 1)
        body = await request.json()
        posted = Posted(channel, self._new_ts(), str(body.get("text") or ""), body.get("blocks") or [],
                        body.get("attachments") or [],
                        ephemeral_for=user if body.get("response_type", "ephemeral") == "ephemeral" else None)
        self.messages.append(posted)
        return web.json_response({"ok": True})

    # -- delivering to the app -------------------------------------------------------------------------------------

    async def _deliver(self, kind: str, payload: dict[str, Any]) -> None:
        if self.mode == "http":
            await self._post_to_app(kind, payload)
            return
        envelope = {"envelope_id": str(uuid.uuid4()), "payload": payload, "type": kind,
                    "accepts_response_payload": kind != "events_api"}
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        self._unacked[envelope["envelope_id"]] = envelope
        for ws in list(self._sockets):
            await ws.send_json(envelope)
            break

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)  # a Socket Mode URL is good for one connection
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {
            "host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP}})
        for old_id, envelope in list(self._unacked.items()):  # what was not acknowledged comes again
            del self._unacked[old_id]
            again = {**envelope, "envelope_id": str(uuid.uuid4())}
            if envelope["type"] == "events_api":
                again.update(retry_attempt=int(envelope.get("retry_attempt", 0)) + 1, retry_reason="timeout")
            self._unacked[again["envelope_id"]] = again
            await ws.send_json(again)
        self._sockets.append(ws)
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                ack = json.loads(frame.data).get("envelope_id")
                if ack and not self.hold_acks:
                    self._unacked.pop(ack, None)
                    self.acked.append(ack)
        finally:
            self._sockets.remove(ws)
        return ws

    async def _post_to_app(self, kind: str, payload: dict[str, Any]) -> None:
        assert self.request_base is not None, "HTTP mode needs request_base (Herald's URL)"
        if kind == "events_api":
            path, body, ctype = "events", json.dumps(payload).encode(), "application/json"
        elif kind == "interactive":
            path, body = "interactivity", urlencode({"payload": json.dumps(payload)}).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            path, body, ctype = "commands", urlencode(payload).encode(), "application/x-www-form-urlencoded"
        for attempt in range(4):
            headers = {"Content-Type": ctype, **sign(self.signing_secret, int(time.time()), body)}
            if attempt:
                headers.update({"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"})
            async with aiohttp.ClientSession() as http, \
                    http.post(f"{self.request_base()}/hooks/slack/{path}", data=body, headers=headers) as answer:
                status = answer.status
            self.deliveries.append((path, status))
            if self._lose_answers:
                self._lose_answers -= 1
                status = 0  # the answer never reached Slack
            if status == 200 or kind != "events_api":  # Slack retries events only
                return
            await asyncio.sleep(0.2)


def sign(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers Slack adds to a request it posts to an app."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _block_text(block: dict[str, Any]) -> str:
    parts = []
    if isinstance(block.get("text"), dict):
        parts.append(block["text"]["text"])
    parts += [f["text"] for f in block.get("fields") or ()]
    return "\n".join(parts)


def _check_message(args: dict[str, Any]) -> str | None:
    """Block Kit's limits that a real Slack enforces with `invalid_blocks`."""
    if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
        return "no_text"
    blocks = _json(args.get("blocks")) + [b for a in _json(args.get("attachments")) for b in a.get("blocks") or ()]
    for block in blocks:
        if block.get("type") == "section" and len((block.get("text") or {}).get("text", "")) > 3000:
            return "invalid_blocks"
        if block.get("type") == "actions":
            ids = [e.get("action_id") for e in block["elements"]]
            # A button's `url`: "Maximum length is 3000 characters" (Block Kit reference, button element).
            if len(ids) != len(set(ids)) or any(len(str(e.get("value", ""))) > 2000 or len(str(e.get("url", "")))
                                                > 3000 for e in block["elements"]):
                return "invalid_blocks"
    return None


def _json(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])


def _ok(body: dict[str, Any]) -> web.Response:
    return web.json_response({"ok": True, **body})


def _fail(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
