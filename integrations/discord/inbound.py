"""What people do on Discord, handed to Herald's intake: typed messages, slash commands and button presses.

- MESSAGE_CREATE: a message's text (`/backup now`, `/link TOKEN` in a direct message, or a bare number picking a
  numbered choice) is an item keyed by the message id, so a replay after a RESUME is the same event. Bots' messages
  (Herald's own among them) are ignored. A refusal is answered in the channel, as a reply to the message.
- INTERACTION_CREATE, APPLICATION_COMMAND: `/backup mode:now` (a rule command's own slash command) and
  `/herald text:backup now` are both the command text `/backup now` (commands.py), keyed by the interaction id.
  Once journaled it is answered DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE ("thinking"), and Herald's reply replaces that
  message; a refusal is the ephemeral answer. `/herald link ...` is deferred ephemerally, so a link token's answer
  is seen by its owner only.
- INTERACTION_CREATE, MESSAGE_COMPONENT: a press of a button whose custom_id is Herald's handle; answered
  DEFERRED_UPDATE_MESSAGE once applied (Herald then edits the message itself), or the refusal, ephemeral.

The sender is `discord:<user id>` (`member.user` in a server, `user` in a direct message); answers go to
`discord:<channel id>`. A direct message's channel is remembered as the person's, for notifications to them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from engine.plugin import Actor, DeliveryError, Incoming, IntegrationContext, Outcome, ReplyTo
from integrations.discord.commands import SlashProblem, command_text
from integrations.discord.config import PLATFORM
from integrations.discord.connector import DiscordConnector
from integrations.discord.interactions import (
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    Interactions,
    reply_id,
)
from integrations.discord.render import EPHEMERAL
from integrations.discord.rest import DiscordRest

log = logging.getLogger("herald.discord")

APPLICATION_COMMAND, MESSAGE_COMPONENT = 2, 3
DISCORD_EPOCH_MS = 1420070400000
Respond = Callable[[int, dict[str, Any] | None], Awaitable[None]]  # (callback type, its data)


def snowflake_time(snowflake: str) -> datetime:
    return datetime.fromtimestamp(((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


class Inbound:
    def __init__(self, ctx: IntegrationContext, rest: DiscordRest, connector: DiscordConnector,
                 interactions: Interactions) -> None:
        self._ctx = ctx
        self._rest = rest
        self._connector = connector
        self._interactions = interactions

    async def dispatch(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "MESSAGE_CREATE":
            await self._message(data)
        elif kind == "INTERACTION_CREATE":
            async def callback(kind: int, body: dict[str, Any] | None) -> None:
                await self._interactions.respond(data, kind, body)

            await self.interaction(data, callback)

    async def _message(self, message: dict[str, Any]) -> None:
        author = message.get("author") or {}
        text = message.get("content")
        if author.get("bot") or author.get("system") or message.get("webhook_id") or not text:
            return  # bots (Herald too), and guild messages whose content the bot may not read (no MESSAGE_CONTENT)
        channel = str(message["channel_id"])
        if "guild_id" not in message:
            await self._connector.remember_direct(str(author["id"]), channel)
        item = Incoming(Actor(platform=PLATFORM, account=str(author["id"])),
                        ReplyTo(platform=PLATFORM, chat=channel, message_id=str(message["id"])),
                        text=str(text), key=str(message["id"]), when=snowflake_time(str(message["id"])))

        async def refused(outcome: Outcome) -> None:
            try:
                await self._rest.call("POST", f"/channels/{channel}/messages",
                                      route=f"POST /channels/{channel}/messages",
                                      json={"content": outcome.text[:2000], "allowed_mentions": {"parse": []},
                                            "message_reference": {"message_id": str(message["id"]),
                                                                  "fail_if_not_exists": False}})
            except DeliveryError as exc:  # the refusal is a courtesy; nothing was accepted, so nothing is lost
                log.warning("discord: could not answer message %s: %s", message["id"], exc)

        await self._ctx.intake.take([item], refused=refused)

    async def interaction(self, interaction: dict[str, Any], respond: Respond) -> None:
        """Hand a slash command or a press on; `respond` gives Discord its one initial response (the callback
        endpoint for the Gateway, the HTTP answer for the interactions endpoint)."""
        kind = interaction.get("type")
        if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
            return
        user = (interaction.get("member") or {}).get("user") or interaction.get("user") or {}
        channel = str(interaction.get("channel_id") or (interaction.get("channel") or {}).get("id"))
        if "guild_id" not in interaction:
            await self._connector.remember_direct(str(user["id"]), channel)
        actor = Actor(platform=PLATFORM, account=str(user["id"]))
        data = interaction.get("data") or {}
        await self._interactions.remember(interaction)

        async def answer(kind: int, data: dict[str, Any] | None) -> None:
            try:
                await respond(kind, data)
            except DeliveryError as exc:  # too late (a replay after a RESUME), or Discord is down: the event stands
                log.warning("discord: could not answer interaction %s: %s", interaction.get("id"), exc)

        if kind == APPLICATION_COMMAND:
            try:
                text = command_text(data, self._ctx.commands())
            except SlashProblem as exc:  # nothing was taken: say why, to the person only
                await answer(CHANNEL_MESSAGE, {"content": str(exc), "flags": EPHEMERAL,
                                               "allowed_mentions": {"parse": []}})
                return
            item = Incoming(actor, ReplyTo(platform=PLATFORM, chat=channel, message_id=reply_id(interaction["id"])),
                            text=text, key=str(interaction["id"]), when=snowflake_time(str(interaction["id"])))
            private = text.split()[0] == "/link"  # a link token's answer is for its owner only
            ack: tuple[int, dict[str, Any] | None] = (DEFERRED_CHANNEL_MESSAGE,
                                                      {"flags": EPHEMERAL} if private else None)
        else:
            message_id = str((interaction.get("message") or {}).get("id", ""))
            item = Incoming(actor, ReplyTo(platform=PLATFORM, chat=channel, message_id=message_id or None),
                            button=str(data.get("custom_id", "")))
            ack = (DEFERRED_UPDATE_MESSAGE, None)

        async def accepted(outcome: Outcome) -> None:
            await answer(*ack)

        async def refused(outcome: Outcome) -> None:
            await answer(CHANNEL_MESSAGE, {"content": outcome.text[:2000], "flags": EPHEMERAL,
                                           "allowed_mentions": {"parse": []}})

        await self._ctx.intake.take([item], accepted=accepted, refused=refused)

