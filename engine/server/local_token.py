"""The local operator's API token in `<data>/api-token` (0600): what the TUI and `herald send` use on this machine.

It lives a day and is renewed every 8 hours while the engine runs (the old one stays valid until its own expiry, so a
running TUI is not cut off; clients re-read the file when they reconnect). A start revokes the token the previous
run left, so a copy of it stops working and local tokens never pile up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from engine.core.config import Config
from engine.core.private import write_private
from engine.core.store import Database
from engine.security import keys
from engine.security.identity import Directory

log = logging.getLogger("herald.engine")

API_TOKEN_FILE = "api-token"
LOCAL_OPERATOR = "local-operator"
TTL_S = 24 * 3600
RENEW_S = 8 * 3600


class LocalToken:
    def __init__(self, config: Config, db: Database, directory: Directory, *, purpose: str,
                 audit: Callable[..., Awaitable[None]]) -> None:
        self._config = config
        self._db = db
        self._directory = directory
        self._purpose = purpose
        self._audit = audit
        self.value = ""

    async def start(self) -> None:
        """Revoke the previous run's token (audited), then issue this run's."""
        await self._revoke_previous()
        await self.issue()

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            await self.issue()

    async def issue(self) -> None:
        subject = self._config.api_principal or LOCAL_OPERATOR
        self.value, _ = await self._db.call(
            keys.issue, sub=subject, purpose=self._purpose, ttl_s=TTL_S,
            roles=tuple(sorted(self._directory.roles_of(subject))), extra={"local": True})
        write_private(self._config.data_dir / API_TOKEN_FILE, self.value + "\n")  # 0600 even if it existed

    async def _revoke_previous(self) -> None:
        try:
            previous = (self._config.data_dir / API_TOKEN_FILE).read_text().strip()
            claims: dict[str, Any] = jwt.decode(previous, options={"verify_signature": False})
        except (OSError, jwt.PyJWTError):
            return
        if claims.get("local") is True and isinstance(claims.get("jti"), str) and isinstance(claims.get("exp"), int):
            await self._db.write(keys.revoke, claims["jti"], claims["exp"])
            await self._audit("token.revoked", "system", jti=claims["jti"],
                              reason="the previous run's local token, replaced at start")
            log.info("revoked the previous run's local API token")
