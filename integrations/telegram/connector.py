"""Sending and editing on Telegram: `sendMessage` and `editMessageText` with HTML text and an inline keyboard.

Failures are classified by BotApi (429 -> RateLimited with `parameters.retry_after`, so the shared sender waits per
conversation; "message is not modified" is success). Telegram does not deduplicate sends, so the outbox marks each
message sent durably before the next one goes out (`dedupes=False`).
"""

from __future__ import annotations

from typing import Any

from engine.plugin import Conversation, Message, MessageRef, Rejected
from integrations.telegram.api import BotApi
from integrations.telegram.config import CAPABILITIES, PLATFORM, parse_address
from integrations.telegram.render import keyboard, links_in_text, opens, to_html


class TelegramConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, api: BotApi) -> None:
        self.api = api

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        body = _content(message)
        body["chat_id"] = int(to.chat)
        body["link_preview_options"] = {"is_disabled": True}
        if message.in_reply_to and message.in_reply_to.isdigit():
            # Threaded under the command it answers; still sent if that message was deleted meanwhile.
            body["reply_parameters"] = {"message_id": int(message.in_reply_to), "allow_sending_without_reply": True}
        result = await self._call("sendMessage", body, message)
        if not isinstance(result, dict) or "message_id" not in result:
            raise Rejected("sendMessage: the answer has no message_id")
        return MessageRef(platform=PLATFORM, chat=to.chat, id=str(result["message_id"]))

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        body = _content(message)
        body.update(chat_id=int(ref.chat), message_id=int(ref.id), link_preview_options={"is_disabled": True})
        await self._call("editMessageText", body, message)  # without reply_markup, Telegram removes the keyboard
        return ref

    async def _call(self, method: str, body: dict[str, Any], message: Message) -> Any:
        try:
            return await self.api.call(method, body)
        except Rejected as exc:
            if not message.links or "BUTTON_URL_INVALID" not in str(exc):
                raise
        # Telegram refused a link button for a reason `opens` did not foresee: rather than lose the message, send it
        # with every link in its text.
        plain = {key: value for key, value in body.items() if key != "reply_markup"}
        plain.update(_content(links_in_text(message)))
        return await self.api.call(method, plain)


def _content(message: Message) -> dict[str, Any]:
    message = links_in_text(message, keep=opens)
    body: dict[str, Any] = {"text": to_html(message), "parse_mode": "HTML"}
    markup = keyboard(message)
    if markup is not None:
        body["reply_markup"] = markup
    return body
