"""HTTP interactions mode: `POST /hooks/discord/interactions`, Discord's Interactions Endpoint URL.

With a `public_key` configured, Discord can send interactions here instead of over the Gateway (set the URL in the
Developer Portal; the two ways are exclusive). Every request is checked first: `X-Signature-Ed25519` must be the
application key's Ed25519 signature of `X-Signature-Timestamp` + the raw body, or the answer is 401 (Discord sends
deliberately bad signatures to check this, and removes an endpoint that accepts them). A timestamp more than five
minutes from now is refused too, so a captured request cannot be replayed later. PING is answered PONG.

The initial response is the HTTP answer itself (the callback endpoint is for Gateway interactions only), given once
the intake has journaled the interaction, within Discord's 3 seconds. Herald's reply may be ready before Discord has
read that answer; the interaction's @original is then not there yet, and the outbox retries the reply
(interactions.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from integrations.discord.inbound import Inbound
from integrations.discord.interactions import PONG

log = logging.getLogger("herald.discord")

PATH = "/hooks/discord/interactions"
PING = 1
MAX_SKEW_S = 300.0
ANSWER_WITHIN_S = 2.5  # Discord's limit is 3 s
SENT_WAIT_S = 3.0  # how long the intake waits for the answer to be written before rules run on the event


class InteractionsEndpoint:
    def __init__(self, public_key: str, inbound: Inbound) -> None:
        self._key = VerifyKey(bytes.fromhex(public_key))
        self._inbound = inbound

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not self._signed(request.headers.get("X-Signature-Ed25519", ""),
                            request.headers.get("X-Signature-Timestamp", ""), body):
            return web.json_response({"error": "invalid request signature"}, status=401)
        try:
            interaction = json.loads(body)
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(interaction, dict):
            return web.json_response({"error": "the body is not an interaction"}, status=400)
        if interaction.get("type") == PING:
            return web.json_response({"type": PONG})
        return await self._answer(request, interaction)

    def _signed(self, signature: str, timestamp: str, body: bytes) -> bool:
        try:
            self._key.verify(timestamp.encode() + body, bytes.fromhex(signature))
            return abs(time.time() - float(timestamp)) <= MAX_SKEW_S
        except (BadSignatureError, ValueError):
            return False

    async def _answer(self, request: web.Request, interaction: dict[str, Any]) -> web.StreamResponse:
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        written = asyncio.Event()

        async def respond(kind: int, data: dict[str, Any] | None) -> None:
            if not answer.done():
                answer.set_result({"type": kind} | ({"data": data} if data is not None else {}))
            try:  # rules run on the event only once Discord has its answer, so replies find the response
                await asyncio.wait_for(written.wait(), SENT_WAIT_S)
            except TimeoutError:
                pass

        handling: asyncio.Future[Any] = asyncio.ensure_future(self._inbound.interaction(interaction, respond))
        try:
            await asyncio.wait([answer, handling], timeout=ANSWER_WITHIN_S, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():
                log.warning("discord: interaction %s got no answer in time", interaction.get("id"))
                return web.json_response({"error": "Herald could not take the interaction"}, status=503)
            response = web.json_response(answer.result())
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            written.set()
            try:
                await handling
            except Exception:  # the answer (if any) is out; a failure after it is Herald's to log, not Discord's
                log.exception("discord: handling interaction %s failed", interaction.get("id"))
