"""A complete chat connector for Loopchat (tests/connectors/loopchat_server.py), written only against `engine.plugin`.

It is what a platform author writes, and nothing more: a config model, address parsing, send and edit over the
platform's HTTP API (with its errors classified for the shared senders), and a long-polling loop that hands what
people said and pressed to Herald's intake, persisting its offset so a restart neither loses nor repeats an update.
Everything else (the outbox, retries, rate limits, rendering, text fallbacks, button handles, catch-up) is Herald's.
It is registered through the `herald.integrations` entry-point group by the tests, like any installed plugin, and
docs/integrations.md shows it whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict

from engine.plugin import (
    Actor,
    AddressError,
    Capabilities,
    ConnectorSpec,
    Conversation,
    Incoming,
    IntegrationContext,
    Manifest,
    Message,
    MessageRef,
    Outcome,
    RateLimited,
    Rejected,
    ReplyTo,
    Unavailable,
    Unload,
)

log = logging.getLogger("herald.loopchat")

PLATFORM = "loopchat"
CAPABILITIES = Capabilities(buttons=True, edits=True, max_text=4096, max_button_bytes=64, edit_interval_s=1.0)
_CHAT = re.compile(r"-?[A-Za-z0-9_]{1,64}")
POLL_TIMEOUT_S = 10


class LoopchatConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str  # e.g. http://127.0.0.1:8081 ; methods are POST {api_url}/bot/{method}
    buttons: bool = True  # False: a bot that cannot show inline keyboards (Herald sends numbered choices instead)


def parse_address(text: str) -> str:
    if not _CHAT.fullmatch(text):
        raise AddressError("a Loopchat chat id is 1-64 letters, digits or _ (a group's id may start with '-')")
    return text


class LoopchatConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, ctx: IntegrationContext, config: LoopchatConfig) -> None:
        self._ctx = ctx
        self._base = config.api_url.rstrip("/") + "/bot/"
        self.capabilities = CAPABILITIES.model_copy(update={"buttons": config.buttons})

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        body: dict[str, Any] = {"chat_id": to.chat, "text": _text(message), "idempotency_key": key,
                                "reply_markup": _keyboard(message)}
        if message.in_reply_to:
            body["reply_to_message_id"] = message.in_reply_to
        result = await self.call("sendMessage", body)
        return MessageRef(platform=PLATFORM, chat=to.chat, id=str(result["message_id"]))

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        await self.call("editMessageText", {"chat_id": ref.chat, "message_id": int(ref.id), "text": _text(message),
                                            "reply_markup": _keyboard(message)})
        return ref

    async def call(self, method: str, body: dict[str, Any]) -> Any:
        """One API call; its failure classified as RateLimited, Unavailable (retry) or Rejected (give up)."""
        try:
            async with self._ctx.http.post(self._base + method, json=body) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"{method}: {type(exc).__name__}: {exc}") from None
        if response.status == 429:
            raise RateLimited(float((answer.get("parameters") or {}).get("retry_after", 1)), method)
        if response.status >= 500:
            raise Unavailable(f"{method}: HTTP {response.status}")
        if not answer.get("ok"):
            raise Rejected(f"{method}: {answer.get('description', response.status)}")
        return answer["result"]

    async def poll(self) -> None:
        """Long-poll for updates forever; the offset is stored once an update is handed on, never before."""
        offsets = self._ctx.store(PLATFORM)
        offset = int(await offsets.get("offset") or 0)
        failures = 0
        while True:
            try:
                updates = await self.call("getUpdates", {"offset": offset, "timeout": POLL_TIMEOUT_S})
                failures = 0
            except (Unavailable, RateLimited, Rejected) as exc:
                failures += 1
                log.warning("loopchat: getUpdates failed (%s); retrying", exc)
                await asyncio.sleep(min(30.0, 0.2 * 2 ** failures))
                continue
            for update in updates:
                await self._handle(update)
                offset = int(update["update_id"]) + 1
                await offsets.put("offset", str(offset))

    async def _handle(self, update: dict[str, Any]) -> None:
        if "callback_query" in update:
            query = update["callback_query"]
            item = Incoming(self._actor(query["from"]), self._reply_to(query["message"]), button=query["data"])
        elif "message" in update and isinstance(update["message"].get("text"), str):
            message = update["message"]
            # The update id makes a redelivered update (a restart before the offset was stored) the same event.
            item = Incoming(self._actor(message["from"]), self._reply_to(message), text=message["text"],
                            key=str(update["update_id"]), when=datetime.fromtimestamp(update["date"], UTC))
        else:
            return

        query = update.get("callback_query")

        async def accepted(outcome: Outcome) -> None:
            if query is not None:  # a press is answered at once, so the client stops its spinner
                await self.call("answerCallbackQuery", {"callback_query_id": query["id"]})

        async def refused(outcome: Outcome) -> None:
            if query is not None:
                await self.call("answerCallbackQuery", {"callback_query_id": query["id"], "text": outcome.text})
            else:
                await self.call("sendMessage", {"chat_id": outcome.item.reply_to.chat, "text": outcome.text})

        try:
            await self._ctx.intake.take([item], accepted=accepted, refused=refused)
        except Exception:  # a failed answer must not stop the poller; the update itself is journaled or refused
            log.exception("loopchat: handling update %s failed", update.get("update_id"))

    @staticmethod
    def _actor(user: dict[str, Any]) -> Actor:
        return Actor(platform=PLATFORM, account=str(user["id"]))

    @staticmethod
    def _reply_to(message: dict[str, Any]) -> ReplyTo:
        return ReplyTo(platform=PLATFORM, chat=str(message["chat"]["id"]), message_id=str(message["message_id"]))


def _text(message: Message) -> str:
    return f"{message.title}\n{message.text}" if message.title else message.text


def _keyboard(message: Message) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": b.label, "callback_data": b.handle} for b in message.buttons]]}


class LoopchatIntegration:
    manifest = Manifest(name=PLATFORM, description="Loopchat, a test chat platform on loopback",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=LoopchatConfig,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        config = ctx.integration_config(PLATFORM)
        assert isinstance(config, LoopchatConfig)
        connector = LoopchatConnector(ctx, config)
        detach = ctx.register_connector(connector)
        ctx.spawn("loopchat-poll", connector.poll)
        return detach


integration = LoopchatIntegration()
