"""Answering interactions (slash commands, button presses) and replying through their 15-minute tokens.

Discord wants every interaction answered within 3 seconds (`POST /interactions/{id}/{token}/callback`); Herald
answers once the intake has journaled it: DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE (5, "Herald is thinking...") for a
command, DEFERRED_UPDATE_MESSAGE (6) for a press, or CHANNEL_MESSAGE_WITH_SOURCE (4) with the refusal, ephemeral.

The interaction's token stays valid for 15 minutes; it is kept in the integration's store (with that lifetime) so the
answers (which the outbox may send after a restart) land where the person expects them: the first answer replaces
the deferred "thinking" message (`PATCH /webhooks/{app}/{token}/messages/@original`), later ones are follow-ups
(`POST /webhooks/{app}/{token}`), and their edits go through the same webhook. After 15 minutes an answer is an
ordinary channel message. Routes name the interaction by its id, never its token (routes appear in logs).
"""

from __future__ import annotations

from typing import Any

from engine.plugin import KeyValue, Unavailable
from integrations.discord.rest import DiscordRejected, DiscordRest

TOKEN_TTL_S = 14 * 60.0  # a little under Discord's 15 minutes, so a token is never used as it expires
PREFIX = "interaction:"  # how an interaction appears as the `message_id` answers refer to

PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE = 1, 4, 5, 6
UNKNOWN_MESSAGE = 10008


def reply_id(interaction_id: str) -> str:
    return PREFIX + interaction_id


def interaction_of(in_reply_to: str | None) -> str | None:
    return in_reply_to[len(PREFIX):] if in_reply_to and in_reply_to.startswith(PREFIX) else None


class Interactions:
    def __init__(self, rest: DiscordRest, store: KeyValue, application_id: str) -> None:
        self._rest = rest
        self._store = store
        self._app = application_id

    async def remember(self, interaction: dict[str, Any]) -> None:
        await self._store.put(PREFIX + str(interaction["id"]), str(interaction["token"]), ttl_s=TOKEN_TTL_S)

    async def respond(self, interaction: dict[str, Any], kind: int, data: dict[str, Any] | None = None) -> None:
        """The interaction's one initial response (callback)."""
        body: dict[str, Any] = {"type": kind} | ({"data": data} if data is not None else {})
        await self._rest.call("POST", f"/interactions/{interaction['id']}/{interaction['token']}/callback",
                              json=body, route=f"POST /interactions/{interaction['id']}/callback")

    async def answer(self, interaction_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Post `body` as an answer to the interaction: the deferred original first, then follow-ups. None when its
        token has expired (the caller posts to the channel instead)."""
        token = await self._store.get(PREFIX + interaction_id)
        if token is None:
            return None
        route = f"/webhooks/{self._app}/<interaction {interaction_id}>"
        if await self._store.get(f"answered:{interaction_id}") is None:
            try:
                sent = await self._rest.call("PATCH", f"/webhooks/{self._app}/{token}/messages/@original",
                                             json=body, route=f"PATCH {route}/messages/@original")
            except DiscordRejected as exc:
                if exc.code != UNKNOWN_MESSAGE:
                    raise
                # The deferred response is not there yet (an HTTP interaction's answer still on its way): retried.
                raise Unavailable(f"PATCH {route}/messages/@original: the original response is not there yet") \
                    from None
            await self._store.put(f"answered:{interaction_id}", "1", ttl_s=TOKEN_TTL_S)
        else:
            sent = await self._rest.call("POST", f"/webhooks/{self._app}/{token}", json=body,
                                         params={"wait": "true"}, route=f"POST {route}")
        await self._store.put(f"webhook-message:{sent['id']}", interaction_id, ttl_s=TOKEN_TTL_S)
        return dict(sent)

    async def edit(self, message_id: str, body: dict[str, Any]) -> bool:
        """Edit a message sent as an interaction answer through its webhook; False if it was not one (or the
        token expired), and the caller edits it as a channel message."""
        interaction_id = await self._store.get(f"webhook-message:{message_id}")
        token = await self._store.get(PREFIX + interaction_id) if interaction_id else None
        if token is None:
            return False
        await self._rest.call("PATCH", f"/webhooks/{self._app}/{token}/messages/{message_id}", json=body,
                              route=f"PATCH /webhooks/{self._app}/<interaction {interaction_id}>/messages")
        return True
