"""Sending and editing on Discord: channel messages, interaction answers, and direct messages to a person.

A conversation is a channel (`discord:<channel id>`); a person's account is `discord:<user id>`, and a notification
for a person goes to their direct-message channel, opened once (`POST /users/@me/channels`) and remembered. Snowflakes
are unique across kinds, so an id Discord calls an Unknown Channel (10003) is tried as a user before giving up.

A new channel message carries a `nonce` derived from the outbox key with `enforce_nonce`, so a send retried after a
lost answer returns the first message instead of posting a second (Discord checks this for a few minutes; the
outbox's own journal covers longer). Failures are classified in rest.py: 429 RateLimited, 5xx Unavailable, the rest
Rejected with Discord's error code.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.plugin import Conversation, KeyValue, Message, MessageRef
from integrations.discord.config import CAPABILITIES, PLATFORM, parse_address
from integrations.discord.interactions import Interactions, interaction_of
from integrations.discord.render import message_body
from integrations.discord.rest import DiscordRejected, DiscordRest

UNKNOWN_CHANNEL = 10003
NONCE_CHARS = 25  # Discord's limit for a nonce


def nonce(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:NONCE_CHARS]


class DiscordConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, rest: DiscordRest, store: KeyValue, interactions: Interactions) -> None:
        self._rest = rest
        self._store = store
        self._interactions = interactions

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        body = message_body(message)
        interaction = interaction_of(message.in_reply_to)
        if interaction is not None:
            answered = await self._interactions.answer(interaction, body)
            if answered is not None:
                return MessageRef(platform=PLATFORM, chat=to.chat, id=str(answered["id"]))
        elif message.in_reply_to:
            body["message_reference"] = {"message_id": message.in_reply_to, "fail_if_not_exists": False}
        body |= {"nonce": nonce(key), "enforce_nonce": True}
        sent = await self._post(to.chat, body)
        return MessageRef(platform=PLATFORM, chat=to.chat, id=str(sent["id"]))

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        body = message_body(message)
        if not await self._interactions.edit(ref.id, body):
            channel = await self._store.get(f"dm:{ref.chat}") or ref.chat
            await self._rest.call("PATCH", f"/channels/{channel}/messages/{ref.id}", json=body,
                                  route=f"PATCH /channels/{channel}/messages")
        return ref

    async def _post(self, chat: str, body: dict[str, Any]) -> Any:
        channel = await self._store.get(f"dm:{chat}") or chat
        try:
            return await self._create(channel, body)
        except DiscordRejected as exc:
            if exc.code != UNKNOWN_CHANNEL or channel != chat:
                raise
            channel = await self._open_direct(chat, exc)
        return await self._create(channel, body)

    async def _create(self, channel: str, body: dict[str, Any]) -> Any:
        return await self._rest.call("POST", f"/channels/{channel}/messages", json=body,
                                     route=f"POST /channels/{channel}/messages")

    async def _open_direct(self, user: str, unknown: DiscordRejected) -> str:
        """The direct-message channel with `user`, if `chat` is a person rather than a channel."""
        try:
            channel = await self._rest.call("POST", "/users/@me/channels", json={"recipient_id": user},
                                            route="POST /users/@me/channels")
        except DiscordRejected:
            raise unknown from None  # neither a channel nor a person the bot can write to
        await self.remember_direct(user, str(channel["id"]))
        return str(channel["id"])

    async def remember_direct(self, user: str, channel: str) -> None:
        if await self._store.get(f"dm:{user}") != channel:
            await self._store.put(f"dm:{user}", channel)
