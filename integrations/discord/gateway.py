"""The Discord Gateway: one WebSocket session, kept alive, resumed after drops, re-identified when it must be.

https://discord.com/developers/docs/topics/gateway, in the order it happens:
- the URL comes from `GET /gateway/bot` (with the session start limit: none left means waiting `reset_after`), and
  is opened with `?v=10&encoding=json`;
- HELLO (op 10) gives `heartbeat_interval`; the first HEARTBEAT (op 1) goes after `interval * random()`, the next
  ones every interval, each carrying the last sequence number; every one must be acknowledged (op 11) before the
  next is due, or the connection is a zombie: it is closed (with 4000, not 1000/1001, which would end the session)
  and resumed on a new one; an op 1 from Discord is answered at once;
- IDENTIFY (op 2) with the token and the intents; READY gives `session_id` and `resume_gateway_url`;
- after a drop or RECONNECT (op 7): RESUME (op 6) with the session and the last sequence on `resume_gateway_url`,
  and Discord replays what was missed; INVALID_SESSION (op 9) with d=false, or the close codes 4007/4009, mean a
  fresh IDENTIFY (after 1-5 s); the close codes 4004 and 4010-4014 are fatal: reported, and the gateway stops.

Inbound is durable the Gateway's way: each dispatch is handed on (to the intake, which journals it) before its
sequence number counts as received, both in the heartbeats and in the RESUME, so a drop mid-event replays it (and
the intake's key makes the replay the same event). The session (id, resume URL, sequence) is kept in the
integration's store after every dispatch, so an engine restart tries a RESUME first; Discord answers it with
INVALID_SESSION if the session is gone, and the connector identifies afresh.

One task does everything: it waits for the next frame with the heartbeat's deadline as its timeout, so heartbeats,
acknowledgements and dispatches never race.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from engine.plugin import DeliveryError, KeyValue
from integrations.discord.rest import DiscordRest

log = logging.getLogger("herald.discord")

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 0, 1, 2, 6, 7, 9, 10, 11
GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 0, 1 << 9, 1 << 12, 1 << 15
FATAL = {4004: "authentication failed: the bot token is wrong or was reset", 4010: "invalid shard",
         4011: "sharding required (the bot is in too many guilds for one connection)",
         4012: "invalid API version", 4013: "invalid intents",
         4014: "disallowed intents: enable Message Content Intent for the bot in the Developer Portal, or set "
               "message_content = false in [integrations.discord]"}
NEW_SESSION = {4007, 4009}  # invalid sequence, session timed out: reconnect with a fresh IDENTIFY
ZOMBIE = 4000  # our close code for a connection whose heartbeats go unacknowledged (any but 1000/1001 resumes)
QUERY = {"v": "10", "encoding": "json"}
INVALID_SESSION_WAIT_S = (1.0, 5.0)  # Discord asks for a random 1-5 s before identifying again
MAX_BACKOFF_S = 60.0
RESUME_ATTEMPTS = 3  # failed connections to resume_gateway_url before starting a new session from the Gateway URL

Dispatch = Callable[[str, dict[str, Any]], Awaitable[None]]


class Fatal(Exception):
    """The Gateway refused the bot for good (a close code that reconnecting cannot fix)."""


@dataclass
class Session:
    session_id: str | None = None
    resume_url: str | None = None
    seq: int | None = None

    @property
    def resumable(self) -> bool:
        return self.session_id is not None and self.resume_url is not None


def intents(message_content: bool) -> int:
    """GUILDS (the channels the bot is in), GUILD_MESSAGES and DIRECT_MESSAGES (MESSAGE_CREATE, where typed
    commands arrive), and MESSAGE_CONTENT (privileged) to read what is typed in server channels."""
    return GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | (MESSAGE_CONTENT if message_content else 0)


class Gateway:
    def __init__(self, http: aiohttp.ClientSession, rest: DiscordRest, token: str, intents: int,
                 dispatch: Dispatch, store: KeyValue) -> None:
        self._http = http
        self._rest = rest
        self._token = token
        self._intents = intents
        self._dispatch = dispatch
        self._store = store
        self.session = Session()
        self.user_id: str | None = None  # the bot's own user id, from READY
        self.stopped: str | None = None  # why the gateway gave up (a fatal close code), for status and tests
        self._gateway_url: str | None = None

    async def run(self) -> None:
        """Stay connected until cancelled, or until Discord refuses the bot for good."""
        saved = await self._store.get("session")
        if saved:
            self.session = Session(**json.loads(saved))
        failures = resume_failures = 0
        while True:
            started, resuming = time.monotonic(), self.session.resumable
            try:
                await self._connect()
                resume_failures = 0
            except Fatal as exc:
                self.stopped = str(exc)
                log.error("discord: the Gateway refused the bot: %s; not reconnecting (fix the config and restart)",
                          exc)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, DeliveryError, ValueError, KeyError) as exc:
                log.warning("discord: Gateway connection failed: %s: %s", type(exc).__name__, exc)
                resume_failures = resume_failures + 1 if resuming else 0
                if resume_failures >= RESUME_ATTEMPTS:
                    # "If you cannot reconnect or the reconnect fails, [...] open a new connection using the URL
                    # from the initial call to Get Gateway Bot [and] re-identify."
                    log.info("discord: resuming failed %d times; identifying afresh", RESUME_ATTEMPTS)
                    await self._forget_session()
            except Exception:  # a bug: logged with its traceback, and the gateway carries on
                log.exception("discord: unexpected Gateway failure")
            failures = 0 if time.monotonic() - started > 30 else failures + 1
            if failures > 1:  # the first reconnect is immediate (resume quickly); then back off, with jitter
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** failures) * random.uniform(0.5, 1.0))

    async def _connect(self) -> None:
        resuming = self.session.resumable
        url = self.session.resume_url if resuming else await self._fresh_url()
        assert url is not None
        async with self._http.ws_connect(url, params=QUERY, autoping=True, max_msg_size=0) as ws:
            first = await ws.receive(timeout=30)
            hello = json.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else {}
            if hello.get("op") != HELLO:
                await ws.close()
                self._after_close(ws.close_code)
                raise ValueError(f"expected HELLO, got {first.type.name} {hello.get('op', '')}")
            interval = float(hello["d"]["heartbeat_interval"]) / 1000
            if resuming:
                await ws.send_json({"op": RESUME, "d": {"token": self._token, "session_id": self.session.session_id,
                                                        "seq": self.session.seq}})
            else:
                await ws.send_json({"op": IDENTIFY, "d": {
                    "token": self._token, "intents": self._intents,
                    "properties": {"os": "linux", "browser": "herald", "device": "herald"}}})
            try:
                await self._read(ws, interval)
            except asyncio.CancelledError:  # the engine stops: close with 4000, not 1000, so a restart can RESUME
                await _close(ws, ZOMBIE)
                raise
        self._after_close(ws.close_code)

    async def _fresh_url(self) -> str:
        """The Gateway URL for a new session, once the session start limit allows one."""
        info = await self._rest.call("GET", "/gateway/bot", route="GET /gateway/bot")
        limit = info.get("session_start_limit") or {}
        if limit.get("remaining") == 0:
            wait = float(limit.get("reset_after", 0)) / 1000
            log.warning("discord: no session starts left; waiting %.0fs for the limit to reset", wait)
            await asyncio.sleep(wait)
        self._gateway_url = str(info["url"])
        return self._gateway_url

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, interval: float) -> None:
        next_beat = time.monotonic() + interval * random.random()
        acked = True
        while True:
            try:
                message = await ws.receive(timeout=max(0.0, next_beat - time.monotonic()))
            except TimeoutError:
                if not acked:
                    log.warning("discord: no HEARTBEAT_ACK since the last heartbeat; replacing the connection")
                    await _close(ws, ZOMBIE)
                    return
                await ws.send_json({"op": HEARTBEAT, "d": self.session.seq})
                acked, next_beat = False, time.monotonic() + interval
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                return  # closed (the close code is read by the caller), or an error
            payload = json.loads(message.data)
            op = payload.get("op")
            if op == DISPATCH:
                await self._on_dispatch(payload)
            elif op == HEARTBEAT:
                await ws.send_json({"op": HEARTBEAT, "d": self.session.seq})
            elif op == HEARTBEAT_ACK:
                acked = True
            elif op == RECONNECT:
                log.info("discord: the Gateway asked for a reconnect; resuming")
                await _close(ws, ZOMBIE)
                return
            elif op == INVALID_SESSION:
                await _close(ws, ZOMBIE)
                if not payload.get("d"):
                    log.info("discord: the session is invalid; identifying afresh")
                    await self._forget_session()
                    await asyncio.sleep(random.uniform(*INVALID_SESSION_WAIT_S))
                return

    async def _on_dispatch(self, payload: dict[str, Any]) -> None:
        kind, data = str(payload.get("t")), payload.get("d") or {}
        if kind == "READY":
            self.user_id = str(data["user"]["id"])
            self.session = Session(session_id=str(data["session_id"]), resume_url=str(data["resume_gateway_url"]))
            log.info("discord: connected as %s (session ready)", data["user"].get("username", self.user_id))
        elif kind == "RESUMED":
            log.info("discord: session resumed")
        else:
            try:
                await self._dispatch(kind, data)
            except Exception:  # one event that cannot be handled must not stop the others
                log.exception("discord: handling %s (seq %s) failed", kind, payload.get("s"))
        if payload.get("s") is not None:
            self.session.seq = int(payload["s"])  # received only now that it has been handed on
        await self._store.put("session", json.dumps(asdict(self.session)))

    def _after_close(self, code: int | None) -> None:
        if code in FATAL:
            raise Fatal(f"close code {code}: {FATAL[code]}")
        if code in NEW_SESSION:
            log.info("discord: the Gateway closed with %s; identifying afresh", code)
            self.session = Session()

    async def _forget_session(self) -> None:
        self.session = Session()
        await self._store.put("session", json.dumps(asdict(self.session)))


async def _close(ws: aiohttp.ClientWebSocketResponse, code: int) -> None:
    """Close without waiting long for Discord's answer (a zombie connection sends none)."""
    try:
        await asyncio.wait_for(ws.close(code=code), 2)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
