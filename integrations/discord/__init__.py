"""Discord: a bot on the Gateway (a WebSocket the bot opens; nothing inbound to expose), with slash commands, buttons
and interaction answers edited in place. docs/platforms/discord.md says how to create the bot.

    config.py        `[integrations.discord]`, addresses and capabilities (all discovery reads)
    rest.py          the REST API: one call, failures classified, a per-route rate-limit gate
    render.py        a Message as content or an embed, with action rows of buttons
    connector.py     send and edit (channel messages, interaction answers, direct messages)
    interactions.py  answering interactions within 3 s, and replying through their 15-minute tokens
    commands.py      the rules' commands as slash commands (registered, re-registered on reload), read back as text
    inbound.py       messages, slash commands and presses handed to the intake
    gateway.py       the Gateway session: heartbeats, IDENTIFY, RESUME, INVALID_SESSION, close codes
    endpoint.py      HTTP interactions mode: POST /hooks/discord/interactions, Ed25519-signed
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.plugin import ConnectorSpec, IntegrationContext, Manifest, Unload, read_secret
from integrations.discord.config import CAPABILITIES, PLATFORM, DiscordConfig, parse_address

if TYPE_CHECKING:
    from integrations.discord.commands import CommandRegistrar
    from integrations.discord.gateway import Gateway

log = logging.getLogger("herald.discord")


class DiscordIntegration:
    manifest = Manifest(name=PLATFORM, description="Discord: a bot with slash commands and buttons, over the Gateway",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=DiscordConfig, needs_config=True,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    def __init__(self) -> None:
        self.gateway: Gateway | None = None  # the running session, for tests and status
        self.registrar: CommandRegistrar | None = None  # keeps the slash commands equal to the rules' commands

    async def setup(self, ctx: IntegrationContext) -> Unload:
        # The rest of the integration is imported only when Discord is configured: discovery reads the manifest
        # above in every engine.
        from integrations.discord.commands import CommandRegistrar
        from integrations.discord.connector import DiscordConnector
        from integrations.discord.gateway import Gateway, intents
        from integrations.discord.inbound import Inbound
        from integrations.discord.interactions import Interactions
        from integrations.discord.rest import DiscordRest

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
            from integrations.discord.endpoint import PATH, InteractionsEndpoint  # PyNaCl only when it is needed

            ctx.routes.add_post(PATH, InteractionsEndpoint(config.public_key, inbound).handle)
        if config.register_commands:
            self.registrar = CommandRegistrar(rest, config.application_id, config.guild_id, ctx.commands)
            stop_listening = ctx.on_commands_changed(self.registrar.changed)
            ctx.spawn("discord-commands", self.registrar.run)

            async def unload() -> None:
                stop_listening()
                await detach()

            return unload
        return detach


integration = DiscordIntegration()
