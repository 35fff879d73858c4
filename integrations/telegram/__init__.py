"""Telegram over the Bot API (https://core.telegram.org/bots/api): commands, buttons, live progress and alerts.

Updates arrive by long polling (default) or by webhook (`mode = "webhook"`); both feed one receive path
(updates.py). Sending and editing are connector.py; docs/platforms/telegram.md shows how to connect a real bot.
"""

from __future__ import annotations

from engine.plugin import ConnectorSpec, IntegrationContext, Manifest, Unload
from integrations.telegram.config import CAPABILITIES, PLATFORM, WEBHOOK_PATH, TelegramConfig, parse_address


class TelegramIntegration:
    manifest = Manifest(name=PLATFORM, description="Telegram bots over the Bot API (long polling or webhook)",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=TelegramConfig, needs_config=True,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        # The rest of the integration is imported only when Telegram is configured: discovery reads the manifest
        # above in every engine.
        from integrations.telegram.api import BotApi
        from integrations.telegram.connector import TelegramConnector
        from integrations.telegram.polling import Poller
        from integrations.telegram.updates import Receiver
        from integrations.telegram.webhook import hook, register, webhook_secret

        config = ctx.integration_config(PLATFORM)
        assert isinstance(config, TelegramConfig)  # validated when the config loaded
        api = BotApi(ctx.http, config.api_url, config.bot_token())
        receiver = Receiver(ctx, api)
        detach = ctx.register_connector(TelegramConnector(api))
        if config.mode == "webhook":
            assert config.webhook_url is not None  # the config model requires it in webhook mode
            secret, url = await webhook_secret(ctx), config.webhook_url
            ctx.routes.add_post(WEBHOOK_PATH, hook(receiver, secret))
            ctx.spawn("telegram-webhook", lambda: register(api, receiver, url, secret))
        else:
            poller = Poller(ctx, api, receiver, config.poll_timeout_s)
            ctx.spawn("telegram-poll", poller.run)

        async def unload() -> None:
            await detach()
            await receiver.close()

        return unload


integration = TelegramIntegration()
