"""Discord: a bot on the Gateway (a WebSocket the bot opens; nothing inbound to expose), with slash commands, buttons
and interaction answers edited in place. docs/platforms/discord.md says how to create the bot.

    config.py        `[integrations.discord]`
    rest.py          the REST API: one call, failures classified, a per-route rate-limit gate
    render.py        a Message as content or an embed, with action rows of buttons
    connector.py     send and edit (channel messages, interaction answers, direct messages)
    interactions.py  answering interactions within 3 s, and replying through their 15-minute tokens
    inbound.py       messages, slash commands and presses handed to the intake
    gateway.py       the Gateway session: heartbeats, IDENTIFY, RESUME, INVALID_SESSION, close codes
    endpoint.py      HTTP interactions mode: POST /hooks/discord/interactions, Ed25519-signed
"""

from __future__ import annotations

import asyncio
import logging

from engine.plugin import ConnectorSpec, DeliveryError, IntegrationContext, Manifest, Rejected, Unload, read_secret
from integrations.discord.config import DiscordConfig
from integrations.discord.connector import CAPABILITIES, PLATFORM, DiscordConnector, parse_address
from integrations.discord.endpoint import PATH, InteractionsEndpoint
from integrations.discord.gateway import Gateway, intents
from integrations.discord.inbound import Inbound, register_commands
from integrations.discord.interactions import Interactions
from integrations.discord.rest import DiscordRest

log = logging.getLogger("herald.discord")

REGISTER_ATTEMPTS = 5


class DiscordIntegration:
    manifest = Manifest(name=PLATFORM, description="Discord: a bot with slash commands and buttons, over the Gateway",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=DiscordConfig, needs_config=True,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    def __init__(self) -> None:
        self.gateway: Gateway | None = None  # the running session, for tests and status

    async def setup(self, ctx: IntegrationContext) -> Unload:
        config = ctx.integration_config(PLATFORM)
        assert isinstance(config, DiscordConfig)  # validated when the config loaded
        token = read_secret(config, "token")
        assert token is not None
        rest = DiscordRest(ctx.http, config.api_url, token)
        store = ctx.store(PLATFORM)
        interactions = Interactions(rest, store, config.application_id)
        connector = DiscordConnector(rest, store, interactions)
        detach = ctx.register_connector(connector)
        inbound = Inbound(ctx, rest, connector, interactions)
        self.gateway = Gateway(ctx.http, rest, token, intents(config.message_content), inbound.dispatch, store)
        ctx.spawn("discord-gateway", self.gateway.run)
        if config.public_key is not None:
            ctx.routes.add_post(PATH, InteractionsEndpoint(config.public_key, inbound).handle)
        if config.register_commands:
            async def register() -> None:
                await _register(rest, config.application_id, config.guild_id)

            ctx.spawn("discord-commands", register)
        return detach


async def _register(rest: DiscordRest, application_id: str, guild_id: str | None) -> None:
    for attempt in range(REGISTER_ATTEMPTS):
        try:
            await register_commands(rest, application_id, guild_id)
            return
        except Rejected as exc:
            log.error("discord: registering the /herald command failed: %s (is application_id right, and was the "
                      "bot invited with the applications.commands scope?)", exc)
            return
        except DeliveryError as exc:
            log.warning("discord: registering the /herald command failed (%s); retrying", exc)
            await asyncio.sleep(min(30.0, 2.0 ** attempt))


integration = DiscordIntegration()
