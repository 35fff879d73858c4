"""Slack: a chat connector over Socket Mode or signed HTTP, with Block Kit buttons, edits and token rotation.

    [integrations.slack]
    bot_token_env = "SLACK_BOT_TOKEN"     # xoxb-...
    app_token_env = "SLACK_APP_TOKEN"     # xapp-...: Socket Mode (or signing_secret_env for HTTP mode)

Addresses are `slack:<channel id>` (C..., G..., D...) and accounts `slack:<member id>` (U...). docs/platforms/
slack.md has the app manifest to paste into Slack and every setting.
"""

from __future__ import annotations

from engine.plugin import ConnectorSpec, IntegrationContext, Manifest, Unload
from integrations.slack.config import CAPABILITIES, PLATFORM, SlackConfig, parse_address

STORE = "slack"


class SlackIntegration:
    manifest = Manifest(name=PLATFORM, description="Slack, over Socket Mode or signed HTTP requests",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=SlackConfig, needs_config=True,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        # slack_sdk is imported only when Slack is configured
        from integrations.slack.connector import SlackConnector
        from integrations.slack.inbound import Inbound
        from integrations.slack.socket import SocketMode
        from integrations.slack.tokens import Tokens
        from integrations.slack.web import SlackWeb, make_client
        from integrations.slack.webhook import add_routes

        config = ctx.integration_config(PLATFORM)
        assert isinstance(config, SlackConfig)  # validated when the config loaded
        store = ctx.store(STORE)
        rotation = None
        if config.rotates:
            client_secret, refresh_token = config.secret("client_secret"), config.secret("refresh_token")
            assert config.client_id is not None and client_secret is not None and refresh_token is not None
            rotation = (config.client_id, client_secret, refresh_token)
        tokens = Tokens(bot_token=config.secret("bot_token"), rotation=rotation, store=store,
                        refresh_before_s=config.refresh_before_s,
                        oauth_client=lambda: make_client(ctx, config.api_url, None))
        web = SlackWeb(ctx, api_url=config.api_url, tokens=tokens)
        detach = ctx.register_connector(SlackConnector(ctx, web, store))
        inbound = Inbound(ctx, web, store)
        if tokens.rotates:
            ctx.spawn("slack-tokens", tokens.keep_fresh)
        app_token = config.secret("app_token")
        if app_token is not None:
            ctx.spawn("slack-socket-mode", SocketMode(ctx, web, inbound, app_token).run)
        else:
            signing_secret = config.secret("signing_secret")
            assert signing_secret is not None  # required without an app token
            add_routes(ctx, inbound, signing_secret)
        return detach


integration = SlackIntegration()
