"""`[integrations.matrix]`: which homeserver, which bot account, how it logs in, and whether it speaks E2EE.

    [integrations.matrix]
    homeserver = "https://matrix.example.org"
    user_id = "@herald:example.org"
    access_token_env = "HERALD_MATRIX_TOKEN"   # or access_token / access_token_file, or password(_env/_file)
    device_id = "HERALDBOT"                    # keeps one device across restarts (transaction ids, E2EE keys)
    store_dir = "matrix-store"                 # E2EE keys (only with encryption = true); relative to the config
    encryption = false

Rooms are `matrix:!opaque:server` (or `matrix:!opaque` in new room versions) or a room alias `matrix:#ops:server`
(resolved by the connector, integrations/matrix/aliases.py), and people `matrix:@user:server`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from engine.plugin import AddressError, Capabilities, check_secret

PLATFORM = "matrix"
# No buttons: Herald renders numbered choices ("Reply with a number: 1 Acknowledge · 2 Mute 1h"); a reply "1" or a
# reaction (1️⃣, ✅ for Acknowledge, 🔕 for Mute 1h) presses one. An event is at most 65535 bytes, and an edit carries
# its text four times (body and HTML, fallback and new content): 4000 characters fit, escaped, in any script.
CAPABILITIES = Capabilities(buttons=False, edits=True, formatting="plain", max_text=4000, edit_interval_s=1.0,
                            dedupes=True)

_USER_ID = re.compile(r"@[^:\s]+:\S+")
# Room ids are opaque after the sigil: `!abc:server` in old room versions, `!abc` (no server) in room version 12+.
_ROOM_ID = re.compile(r"![^\s/]+")
_ROOM_ALIAS = re.compile(r"#[^:\s]+:\S+")


def parse_address(text: str) -> str:
    """A room (`!room id`, or an alias `#ops:server` the connector resolves) or a person (`@user:server`)."""
    if _ROOM_ID.fullmatch(text) or _ROOM_ALIAS.fullmatch(text) or _USER_ID.fullmatch(text):
        return text
    raise AddressError("a Matrix address is a room id such as !AbCdEf:example.org (or !AbCdEf in new room "
                       "versions; see the room's settings, Advanced), a room alias such as #ops:example.org, "
                       "or a user id such as @alice:example.org")


class MatrixConfig(BaseModel):
    # Built when a config with [integrations.matrix] is validated: never in an engine without it.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    homeserver: str  # the client-server API's base URL, e.g. https://matrix.example.org
    user_id: str  # the bot's own account, @herald:example.org
    access_token: SecretStr | None = None
    access_token_env: str | None = None
    access_token_file: Path | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: Path | None = None
    # The device the bot acts as. With a password and no device_id, the first login's device is remembered and
    # reused, so a restart keeps its transaction ids (the homeserver's deduplication) and its encryption keys.
    device_id: str | None = None
    store_dir: Path | None = None  # where E2EE keys live (encryption = true); default: <data_dir>/matrix-store
    encryption: bool = False  # end-to-end encryption needs the extra: pip install 'matrix-nio[e2e]'
    sync_timeout_s: float = 30.0  # how long one /sync long poll waits for news

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("homeserver is the client API's URL, such as https://matrix.example.org")
        return value.rstrip("/")

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        if not _USER_ID.fullmatch(value):
            raise ValueError("user_id is the bot's full Matrix id, such as @herald:example.org")
        return value

    @model_validator(mode="after")
    def _one_login(self) -> MatrixConfig:
        token = any(getattr(self, k) is not None for k in ("access_token", "access_token_env", "access_token_file"))
        password = any(getattr(self, k) is not None for k in ("password", "password_env", "password_file"))
        if token and password:
            raise ValueError("set an access_token or a password for the bot, not both")
        check_secret(self, "password" if password else "access_token")
        if self.encryption and not encryption_available():
            raise ValueError("encryption = true needs the E2EE extra: pip install 'matrix-nio[e2e]' (vodozemac)")
        return self


def encryption_available() -> bool:
    """Whether the E2EE extra (matrix-nio[e2e]: vodozemac) is installed."""
    from nio.crypto import ENCRYPTION_ENABLED  # noqa: PLC0415 - only asked when encryption is configured

    return bool(ENCRYPTION_ENABLED)
