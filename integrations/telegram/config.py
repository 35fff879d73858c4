"""`[integrations.telegram]`: the bot's token, where the Bot API is, and how updates arrive (polling or webhook);
and what every engine reads from the manifest: the address form and the capabilities."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from engine.plugin import AddressError, Capabilities, check_secret, read_secret
from integrations.telegram.render import MAX_TEXT

WEBHOOK_PATH = "/hooks/telegram"
PLATFORM = "telegram"
# One edit a second per message stays within Telegram's limits (about 1 message a second per chat, 20 a minute
# per group); a burst beyond them is answered 429 and waited out.
CAPABILITIES = Capabilities(buttons=True, edits=True, formatting="html", max_text=MAX_TEXT, max_button_bytes=64,
                            edit_interval_s=1.0)
_CHAT_ID = re.compile(r"-?[1-9][0-9]{0,19}")


def parse_address(text: str) -> str:
    if not _CHAT_ID.fullmatch(text):
        raise AddressError("a Telegram address is a numeric chat id: a person's user id (telegram:123456789) or a "
                           "group's id, which is negative (telegram:-1001234567890); docs/platforms/telegram.md "
                           "shows how to find it")
    return text


class TelegramConfig(BaseModel):
    # Built when a config with [integrations.telegram] is validated: never in an engine without it.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # The token BotFather gave (123456:ABC-DEF...): inline, by environment variable, or in a file only Herald reads.
    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None
    # Requests go to {api_url}/bot{token}/{method}; a self-hosted Bot API server (or the tests' fake) goes here.
    api_url: str = "https://api.telegram.org"
    # polling: Herald asks for updates (works behind NAT, nothing inbound). webhook: Telegram POSTs them to
    # webhook_url, which must reach Herald's POST /hooks/telegram (HTTPS, through your reverse proxy).
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    # Seconds a getUpdates long poll waits for something new (Telegram allows up to 50).
    poll_timeout_s: int = Field(default=30, ge=1, le=50)

    @model_validator(mode="after")
    def _consistent(self) -> TelegramConfig:
        check_secret(self, "token")
        if urlsplit(self.api_url).scheme not in ("http", "https"):
            raise ValueError(f"api_url must be an http(s) URL, got {self.api_url!r}")
        if self.mode == "webhook":
            if not self.webhook_url:
                raise ValueError("webhook_url is required in webhook mode: the public HTTPS URL that reaches "
                                 f"Herald's POST {WEBHOOK_PATH} (e.g. https://herald.example.com{WEBHOOK_PATH})")
            if urlsplit(self.webhook_url).scheme not in ("http", "https"):
                raise ValueError(f"webhook_url must be an https URL, got {self.webhook_url!r}")
        elif self.webhook_url is not None:
            raise ValueError("webhook_url is only used with mode = \"webhook\"")
        return self

    def bot_token(self) -> str:
        token = read_secret(self, "token")
        assert token is not None  # check_secret made it required
        return token
