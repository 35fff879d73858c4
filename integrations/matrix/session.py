"""The bot's Matrix session: one nio client, logged in with an access token or a password, on a stable device.

A stable device matters twice: the homeserver deduplicates a retried send by (device, transaction id), and
end-to-end encryption keys belong to a device. So a password login reuses `device_id` from the config or, failing
that, the device of the first login, remembered in the integration's store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from nio import AsyncClient, AsyncClientConfig, LoginResponse, WhoamiResponse

from engine.plugin import KeyValue, read_secret
from integrations.matrix.config import MatrixConfig

log = logging.getLogger("herald.matrix")
REQUEST_TIMEOUT_S = 30.0


class LoginFailed(Exception):
    """The homeserver refused the bot's credentials (nothing will work until the config is fixed)."""


class Session:
    def __init__(self, config: MatrixConfig, store: KeyValue, store_dir: Path) -> None:
        self._config = config
        self._store = store
        self._store_dir = store_dir
        self._ready = asyncio.Event()
        if config.encryption:
            store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Errors come back to us at once (no retries inside nio): the outbox and the sync loop decide.
        self.client = AsyncClient(
            config.homeserver, config.user_id, device_id=config.device_id, store_path=str(store_dir),
            config=AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, store_sync_tokens=False,
                                     encryption_enabled=config.encryption, request_timeout=REQUEST_TIMEOUT_S))

    @property
    def user_id(self) -> str:
        return self._config.user_id

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def start(self) -> None:
        """Log in (retrying while the homeserver is unreachable); raises LoginFailed for refused credentials."""
        delay = 0.5
        while True:
            try:
                await self._login()
                self._ready.set()
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("matrix: cannot reach the homeserver to log in (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def _login(self) -> None:
        config, client = self._config, self.client
        token = read_secret(config, "access_token")
        if token is not None:
            device = config.device_id
            if device is None:  # the token's own device, so transaction ids and keys stay with it
                client.access_token = token
                answer = await client.whoami()
                if not isinstance(answer, WhoamiResponse):
                    raise LoginFailed(f"the access token was refused: {answer.message}")
                device = answer.device_id
            if device is None:
                raise LoginFailed("the access token has no device; set device_id")
            client.restore_login(config.user_id, device, token)
            return
        password = read_secret(config, "password")
        assert password is not None  # the config model requires one of the two
        client.device_id = config.device_id or await self._store.get("device_id")
        answer = await client.login(password, device_name="Herald")
        if not isinstance(answer, LoginResponse):
            raise LoginFailed(f"the homeserver refused the password login: {answer.message}")
        await self._store.put("device_id", answer.device_id)
        log.info("matrix: logged in as %s on device %s", config.user_id, answer.device_id)

    async def close(self) -> None:
        await self.client.close()
