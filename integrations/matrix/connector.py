"""Sending to Matrix: `m.notice` messages and `m.replace` edits, with the homeserver's answers classified.

Every send is `PUT /rooms/{room}/send/{type}/{txnId}` with the outbox's key as the transaction id, so a send the
outbox retries (after a timeout whose request did arrive, or a crash) is the same event: the homeserver answers a
repeated transaction id of the same device with the first event's id instead of posting again (client-server API,
"Transaction identifiers"). Hence `Capabilities(dedupes=True)`: the session always acts as one stable device.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from nio import ErrorResponse, JoinResponse, LocalProtocolError, RoomCreateResponse, RoomSendResponse

from engine.plugin import (
    Conversation,
    DeliveryError,
    IntegrationContext,
    Message,
    MessageRef,
    RateLimited,
    Rejected,
    Unavailable,
)
from integrations.matrix import content
from integrations.matrix.aliases import Aliases, is_alias
from integrations.matrix.config import CAPABILITIES, PLATFORM, parse_address
from integrations.matrix.session import Session

log = logging.getLogger("herald.matrix")

REACTIONS_TTL_S = 7 * 24 * 3600.0  # how long a reaction on a notification still presses its button
CHOICES_META = "choices"  # engine.delivery.render: the handles of a message's numbered choices


class MatrixConnector:
    platform = PLATFORM
    capabilities = CAPABILITIES

    def __init__(self, ctx: IntegrationContext, session: Session) -> None:
        self._ctx = ctx
        self._session = session
        self._store = ctx.store(PLATFORM)
        self.aliases = Aliases(session, self._store)
        self._rooms: dict[str, str] = {}  # a person's id -> the direct room messages for them go to

    def parse_address(self, text: str) -> str:
        return parse_address(text)

    async def chat_id(self, chat: str) -> str:
        """A room alias's room id (engine.delivery NamesChats): notifications to `#ops:server` are kept under the
        room id that replies and reactions from the room carry."""
        return await self.aliases.room_for(chat) if is_alias(chat) else chat

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        room = await self._room(to.chat)
        event_id = await self.put(room, "m.room.message", content.notice(message), txn=key)
        if await self._remember_choices(event_id, message):
            await self._offer_reactions(room, event_id, message, key)
        return MessageRef(platform=PLATFORM, chat=room, id=event_id)

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        await self.put(ref.chat, "m.room.message", content.replacement(ref.id, message), txn=key)
        await self._remember_choices(ref.id, message)
        return ref

    async def put(self, room: str, event_type: str, body: dict[str, Any], *, txn: str) -> str:
        """Send one event; its failure classified as RateLimited, Unavailable (retry) or Rejected (give up)."""
        answer = await self._call_send(room, event_type, body, txn)
        if isinstance(answer, ErrorResponse) and answer.status_code == "M_FORBIDDEN":
            # A configured room the bot was invited to but has not joined yet (it joins invites as it syncs).
            joined = await self._guard(self._session.client.join(room))
            if isinstance(joined, JoinResponse):
                answer = await self._call_send(room, event_type, body, txn)
        if isinstance(answer, RoomSendResponse):
            return str(answer.event_id)
        raise classify(answer, f"send to {room}")

    async def _call_send(self, room: str, event_type: str, body: dict[str, Any], txn: str) -> Any:
        if not self._session.ready:
            raise Unavailable("not logged in to the homeserver yet")
        return await self._guard(self._session.client.room_send(room, event_type, body, tx_id=txn,
                                                                ignore_unverified_devices=True))

    @staticmethod
    async def _guard(call: Any) -> Any:
        try:
            return await call
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"homeserver unreachable: {type(exc).__name__}") from None
        except LocalProtocolError as exc:  # SendRetryError too; e.g. an encrypted room not synced yet: try later
            raise Unavailable(f"not ready to send: {exc}") from None

    async def _room(self, chat: str) -> str:
        """The room id for an address: a room id as is, an alias resolved, a person's id their direct room."""
        if chat.startswith("!"):
            return chat
        if is_alias(chat):
            return self.aliases.known(chat) or await self.aliases.resolve(chat)
        if chat in self._rooms:
            return self._rooms[chat]
        client = self._session.client
        stored = await self._store.get(f"dm:{chat}")
        if stored is None:  # a message to a person: a direct room with them, created once and remembered
            created = await self._guard(client.room_create(is_direct=True, invite=[chat]))
            if not isinstance(created, RoomCreateResponse):
                raise classify(created, f"create a direct room with {chat}")
            stored = str(created.room_id)
            await self._store.put(f"dm:{chat}", stored)
        self._rooms[chat] = stored
        return stored

    async def _remember_choices(self, event_id: str, message: Message) -> bool:
        """Keep which reaction on `event_id` presses which of its numbered choices; False if it has none."""
        handles = message.meta.get(CHOICES_META)
        if not (isinstance(handles, list) and handles):
            return False
        choices = {content.emoji_key(k): v for k, v in content.reaction_choices(message, handles).items()}
        await self._store.put(f"reactions:{event_id}", json.dumps(choices), ttl_s=REACTIONS_TTL_S)
        return True

    async def _offer_reactions(self, room: str, event_id: str, message: Message, key: str) -> None:
        """Put the choices' reactions under the notification, so a person presses one with a tap. A failure here
        is only logged: the message itself is sent, and replying with a number still works."""
        handles = message.meta.get(CHOICES_META) or []
        for n, emoji in enumerate(content.offered_reactions(message, list(handles))):
            try:
                await self.put(room, "m.reaction", content.reaction(event_id, emoji), txn=f"{key}/react/{n}")
            except DeliveryError as exc:
                log.warning("matrix: could not add the %s reaction under %s: %s", emoji, event_id, exc)
                return

    async def reaction_handle(self, event_id: str, emoji: str) -> str | None:
        """The button handle a reaction `emoji` on the bot's message `event_id` presses, if any."""
        stored = await self._store.get(f"reactions:{event_id}")
        return json.loads(stored).get(content.emoji_key(emoji)) if stored else None


def classify(answer: Any, what: str) -> Exception:
    """A homeserver's error answer as the shared sender's RateLimited, Unavailable or Rejected."""
    transport = getattr(answer, "transport_response", None)
    status = getattr(transport, "status", None)
    code = getattr(answer, "status_code", None)
    if status == 429 or code == "M_LIMIT_EXCEEDED":
        return RateLimited(_retry_after_s(answer, transport), what)
    if status is None or status >= 500 or code == "M_UNKNOWN_TOKEN":  # a token may be fixed without a restart
        return Unavailable(f"{what}: {code or status or 'no answer'}")
    return Rejected(f"{what}: {code}: {getattr(answer, 'message', '')}")


def _retry_after_s(answer: Any, transport: Any) -> float:
    """The wait a 429 asks for: `retry_after_ms` in the body, or the `Retry-After` header (seconds), which the spec
    now prefers (retry_after_ms is deprecated); a second when neither is given."""
    retry_ms = getattr(answer, "retry_after_ms", None)
    if retry_ms:
        return float(retry_ms) / 1000
    header = (getattr(transport, "headers", None) or {}).get("Retry-After", "")
    try:
        return max(0.0, float(header))
    except ValueError:
        return 1.0
