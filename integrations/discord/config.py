"""`[integrations.discord]`: the bot's credentials, where Discord's API is, and what the bot asks the Gateway for;
and what every engine reads from the manifest: the address form and the capabilities."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from engine.plugin import AddressError, Capabilities, check_secret

PLATFORM = "discord"
CAPABILITIES = Capabilities(buttons=True, edits=True, formatting="plain", max_text=2000, max_button_bytes=64,
                            edit_interval_s=1.0)
_ADDRESS = re.compile(r"[0-9]{15,21}")
SNOWFLAKE = re.compile(r"[0-9]{1,20}")  # Discord ids: 64-bit integers written in decimal
DEFAULT_API_URL = "https://discord.com/api/v10"


def parse_address(text: str) -> str:
    if not _ADDRESS.fullmatch(text):
        raise AddressError("a Discord address is a channel or user id, a number of 17-20 digits (enable Developer "
                           "Mode, then right click the channel or person > Copy ID), e.g. discord:1100000000000000001")
    return text


class DiscordConfig(BaseModel):
    # Built when a config with [integrations.discord] is validated: never in an engine without it.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # The bot token (Developer Portal > the application > Bot > Reset Token): inline, by variable, or by file.
    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None
    application_id: str  # General Information > Application ID; slash commands and interaction edits are under it
    # HTTP interactions mode: the application's public key (General Information > Public Key, 64 hex digits). Set,
    # Herald serves POST /hooks/discord/interactions (set it as the Interactions Endpoint URL) and checks each
    # request's Ed25519 signature; Discord then sends interactions there instead of over the Gateway.
    public_key: str | None = None
    api_url: str = DEFAULT_API_URL  # tests point it at a fake; the Gateway URL comes from GET {api_url}/gateway/bot
    # Register the slash commands (the rules' commands and /herald) in this guild only (instant) instead of globally
    # (up to an hour to appear, and the only way they are offered in direct messages).
    guild_id: str | None = None
    # Ask for MESSAGE_CONTENT (a privileged intent to enable in the Developer Portal) so text commands typed in a
    # server channel (`/backup now` as a message) are read. Without it the bot still reads direct messages,
    # messages that mention it, and every slash command and button press.
    message_content: bool = True
    # Register the slash commands at start and after a reload that changes the rules' commands (a bulk overwrite of
    # the application's commands in that scope).
    register_commands: bool = True

    @field_validator("application_id", "guild_id")
    @classmethod
    def _snowflake(cls, value: str | None) -> str | None:
        if value is not None and not SNOWFLAKE.fullmatch(value):
            raise ValueError("a Discord id is a number (Developer Mode > right click > Copy ID)")
        return value

    @field_validator("public_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("the public key is 64 hexadecimal digits (General Information > Public Key)")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> DiscordConfig:
        check_secret(self, "token")
        return self
