"""Socket Mode (https://api.slack.com/apis/socket-mode): Slack's events over a WebSocket the bot opens, so nothing
inbound needs to reach Herald.

`apps.connections.open` (with the app-level token) gives a one-time wss:// URL; Slack says `hello`, then sends
envelopes (`slash_commands`, `interactive`, `events_api`), each acknowledged by sending back its `envelope_id`
within 3 seconds, here only once it is journaled (an envelope not acknowledged is delivered again, and Herald's
keys make that the same event). `disconnect` (the connection is being refreshed) and a dropped socket both lead to
a new URL and a new connection, with backoff and jitter when connecting keeps failing.

Why not slack_sdk's aiohttp SocketModeClient: it runs each envelope's listeners as a task nobody awaits
(asyncio.ensure_future), so two envelopes can be journaled out of order and handlers outlive the engine's stop,
and it reconnects after a fixed pause without backoff. This loop handles envelopes in the order they arrive, in a
task the engine owns; it still uses slack_sdk for the Web API call and the envelope and ack models.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from engine.plugin import IntegrationContext, RateLimited, Unavailable
from integrations.slack.inbound import Inbound
from integrations.slack.web import SlackWeb, classify

log = logging.getLogger("herald.slack")

MAX_BACKOFF_S = 30.0
HEARTBEAT_S = 20.0  # a ping of our own, so a half-open socket is noticed


class SocketMode:
    def __init__(self, ctx: IntegrationContext, web: SlackWeb, inbound: Inbound, app_token: str) -> None:
        self._ctx = ctx
        self._web = web
        self._inbound = inbound
        self._app_token = app_token
        self.connections = 0

    async def run(self) -> None:
        """Stay connected forever (a task the engine owns and cancels at stop)."""
        failures = 0
        while True:
            wait: float | None = None
            try:
                url = await self._open()
                async with self._ctx.http.ws_connect(url, heartbeat=HEARTBEAT_S) as ws:
                    if await self._session(ws):
                        failures = 0
            except RateLimited as exc:
                wait = exc.retry_after_s
            except Unavailable as exc:
                log.warning("slack: Socket Mode connection failed (%s); reconnecting", exc)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # aiohttp's text names the URL: not shown
                log.warning("slack: Socket Mode connection failed (%s %s); reconnecting", type(exc).__name__,
                            getattr(exc, "status", ""))
            failures += 1
            if wait is None:  # the first reconnect after a good session is at once; then exponential, with jitter
                wait = 0.0 if failures == 1 else min(MAX_BACKOFF_S, 0.25 * 2 ** failures) * random.uniform(0.5, 1)
            await asyncio.sleep(wait)

    async def _open(self) -> str:
        """A fresh wss:// URL (never logged: it carries a ticket)."""
        client = self._web.client(None)
        try:
            response = await client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            problem = classify("apps.connections.open", exc)
            if not isinstance(problem, (RateLimited, Unavailable)):
                log.error("slack: apps.connections.open refused the app token (%s); check app_token", problem)
                raise Unavailable(str(problem)) from None
            raise problem from None
        except SlackClientError as exc:
            raise Unavailable(f"apps.connections.open: {type(exc).__name__}") from None
        return str(response["url"])

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read one connection until Slack says `disconnect` or the socket goes; True if it said `hello`."""
        greeted = False
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break  # closed or an error: reconnect
            message = json.loads(frame.data)
            kind = message.get("type")
            if kind == "hello":
                greeted = True
                self.connections += 1
                log.info("slack: Socket Mode connected")
            elif kind == "disconnect":
                log.info("slack: Socket Mode asked to reconnect (%s)", message.get("reason"))
                break
            else:
                request = SocketModeRequest.from_dict(message)
                if request is None:
                    continue
                try:
                    await self._inbound.handle(request.type, request.payload)  # journaled before the ack
                except Exception:  # not acknowledged: Slack delivers it again, and its key makes it one event
                    log.exception("slack: handling a %s envelope failed", request.type)
                    continue
                await ws.send_str(json.dumps(SocketModeResponse(envelope_id=request.envelope_id).to_dict()))
        return greeted
