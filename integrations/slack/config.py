"""`[integrations.slack]`: the bot's credentials, which transport receives, and optional token rotation.

Every secret may be given inline, by environment variable (`*_env`) or by a private file (`*_file`), through
engine.plugin.check_secret. With `app_token` set, Herald receives over Socket Mode (nothing inbound); without it,
Slack posts to Herald's `/hooks/slack/*` routes and `signing_secret` verifies those requests.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from engine.plugin import AddressError, Capabilities, check_secret, read_secret
from integrations.slack import render

PLATFORM = "slack"
CAPABILITIES = Capabilities(buttons=True, edits=True, formatting="plain", max_text=render.MAX_SECTION,
                            max_button_bytes=64, edit_interval_s=1.0)
# Channels (C...), private channels (G...), direct messages (D...), and people (U..., W...: a DM with the bot).
_ID = re.compile(r"[CGDUW][A-Z0-9]{2,20}")


def parse_address(text: str) -> str:
    if not _ID.fullmatch(text):
        raise AddressError("a Slack address is a channel id (C012AB3CD; G... private, D... direct message) or a "
                           "member id (U012AB3CD) as Slack shows it, e.g. slack:C012AB3CD")
    return text

DEFAULT_API_URL = "https://slack.com/api/"


class SlackConfig(BaseModel):
    # Built when a config with [integrations.slack] is validated: never in an engine without it.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # The bot token (xoxb-...). With token rotation configured it may be left out: the first refresh makes one.
    bot_token: SecretStr | None = None
    bot_token_env: str | None = None
    bot_token_file: Path | None = None
    # The app-level token (xapp-..., scope connections:write): Socket Mode when set.
    app_token: SecretStr | None = None
    app_token_env: str | None = None
    app_token_file: Path | None = None
    # HTTP mode (no app_token): Slack signs every request it posts to /hooks/slack/* with this secret.
    signing_secret: SecretStr | None = None
    signing_secret_env: str | None = None
    signing_secret_file: Path | None = None
    # Web API calls go to {api_url}{method}; tests point it at a fake Slack.
    api_url: str = DEFAULT_API_URL
    # Token rotation (https://api.slack.com/authentication/rotation): all three, or none.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    refresh_token: SecretStr | None = None
    refresh_token_env: str | None = None
    refresh_token_file: Path | None = None
    # Refresh this long before the access token expires (Slack's tokens live 12 hours).
    refresh_before_s: float = Field(default=7200, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> SlackConfig:
        check_secret(self, "app_token", required=False)
        check_secret(self, "signing_secret", required=self.app_token_source is None)
        check_secret(self, "client_secret", required=False)
        check_secret(self, "refresh_token", required=False)
        rotation = [self.client_id is not None, self.client_secret_source is not None,
                    self.refresh_token_source is not None]
        if any(rotation) and not all(rotation):
            raise ValueError("token rotation needs client_id, client_secret and refresh_token together")
        check_secret(self, "bot_token", required=not self.rotates)
        if not self.api_url.endswith("/"):
            self.api_url += "/"
        return self

    @property
    def rotates(self) -> bool:
        return self.refresh_token_source is not None and self.client_id is not None

    @property
    def socket_mode(self) -> bool:
        return self.app_token_source is not None

    @property
    def app_token_source(self) -> object:
        return self.app_token or self.app_token_env or self.app_token_file

    @property
    def client_secret_source(self) -> object:
        return self.client_secret or self.client_secret_env or self.client_secret_file

    @property
    def refresh_token_source(self) -> object:
        return self.refresh_token or self.refresh_token_env or self.refresh_token_file

    def secret(self, name: str) -> str | None:
        return read_secret(self, name)
