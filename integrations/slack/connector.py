"""Sending and editing on Slack: chat.postMessage and chat.update with Block Kit, and a slash command's answers.

A `reply` to a slash command (a denial, /help, /link) is shown only to the person who ran it: it goes to the
command's `response_url` as an ephemeral message (that also works in a DM the bot is not part of). The URL was kept
in the integration's store when the command arrived (it lives 30 minutes); without it, the reply is posted in the
channel. Progress and results are ordinary messages, so they can be edited.
"""

from __future__ import annotations

import logging

from engine.plugin import (
    Conversation,
    IntegrationContext,
    KeyValue,
    Message,
    MessageRef,
    Rejected,
)
from integrations.slack import render
from integrations.slack.config import CAPABILITIES, PLATFORM, parse_address
from integrations.slack.web import SlackWeb, post_response

log = logging.getLogger("herald.slack")

COMMAND_PREFIX = "cmd:"  # a ReplyTo.message_id that names a slash command (its trigger id), not a message
RESPONSE_URL_TTL_S = 29 * 60
EPHEMERAL = "ephemeral:"


def response_url_key(trigger_id: str) -> str:
    return f"response:{trigger_id}"


class SlackConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, ctx: IntegrationContext, web: SlackWeb, store: KeyValue) -> None:
        self._ctx = ctx
        self._web = web
        self._store = store

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        command = message.in_reply_to or ""
        if message.kind == "reply" and command.startswith(COMMAND_PREFIX):
            url = await self._store.get(response_url_key(command.removeprefix(COMMAND_PREFIX)))
            body = {"response_type": "ephemeral", "replace_original": False, **render.payload(message)}
            if url is not None and await post_response(self._ctx.http, url, body):
                return MessageRef(platform=PLATFORM, chat=to.chat, id=EPHEMERAL + key)
        result = await self._web.call("chat.postMessage", {"channel": to.chat, **render.payload(message)})
        # Posting to a member id lands in their DM: the answer names that channel, which chat.update needs.
        return MessageRef(platform=PLATFORM, chat=str(result.get("channel") or to.chat), id=str(result["ts"]))

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        if ref.id.startswith(EPHEMERAL):
            raise Rejected("an ephemeral answer cannot be edited")
        await self._web.call("chat.update", {"channel": ref.chat, "ts": ref.id, **render.payload(message)})
        return ref
