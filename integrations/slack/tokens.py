"""The bot's access token, and its rotation (https://api.slack.com/authentication/rotation).

Without rotation the configured bot token is used as it is. With `client_id`, `client_secret` and a
`refresh_token`, access tokens expire (after 12 hours on Slack) and each refresh token works once: slack_sdk's
AsyncTokenRotator calls `oauth.v2.access` with `grant_type=refresh_token`, and the new pair is put in the
integration's durable store (ctx.store("slack")) before it is used, so a restart starts from the newest pair and not
from the configured refresh token, which is dead by then. The stored pair remembers which configured refresh token it
descends from: installing the app again (a new refresh token in the config) starts over from the config.

A refresh that fails is logged as an error (with Slack's reason, never a token) and retried by the keeper with
backoff; sends meanwhile fail as Unavailable and stay in the outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from engine.plugin import KeyValue, Unavailable

log = logging.getLogger("herald.slack")

STORE_KEY = "tokens"
RETRY_S = (5.0, 15.0, 60.0, 300.0)


@dataclass
class Pair:
    access: str
    refresh: str
    expires_at: float  # unix seconds; 0 when unknown (refresh at once)
    origin: str  # a digest of the configured refresh token this pair descends from


class Tokens:
    def __init__(self, *, bot_token: str | None, rotation: tuple[str, str, str] | None, store: KeyValue,
                 refresh_before_s: float, oauth_client: Callable[[], AsyncWebClient]) -> None:
        self._static = bot_token
        self._rotation = rotation  # (client_id, client_secret, refresh_token)
        self._store = store
        self._before = refresh_before_s
        self._oauth_client = oauth_client
        self._pair: Pair | None = None
        self._lock = asyncio.Lock()
        self.refreshed = 0

    @property
    def rotates(self) -> bool:
        return self._rotation is not None

    async def access(self) -> str:
        if self._rotation is None:
            assert self._static is not None  # the config requires one without rotation
            return self._static
        if self._pair is None:
            await self.load()
        assert self._pair is not None
        if not self._pair.access or self._pair.expires_at <= time.time():
            return await self.refresh(stale=self._pair.access)
        return self._pair.access

    async def load(self) -> None:
        """The newest pair: the stored one if it descends from the configured refresh token, else the config's."""
        if self._rotation is None:
            return
        origin = _digest(self._rotation[2])
        stored = await self._store.get(STORE_KEY)
        if stored is not None:
            pair = Pair(**json.loads(stored))
            if pair.origin == origin:
                self._pair = pair
                return
            log.info("slack: the configured refresh token changed; starting from it")
        self._pair = Pair(access=self._static or "", refresh=self._rotation[2], expires_at=0, origin=origin)

    async def refresh(self, *, stale: str | None = None) -> str:
        """Exchange the refresh token for a new pair, store it, and return the new access token. `stale`: the
        token a caller found dead; if another caller has refreshed meanwhile, its token is returned instead."""
        assert self._rotation is not None
        async with self._lock:
            if self._pair is None:
                await self.load()
            pair = self._pair
            assert pair is not None
            if stale is not None and pair.access != stale and pair.expires_at > time.time():
                return pair.access
            client_id, client_secret, _ = self._rotation
            rotator = AsyncTokenRotator(client_id=client_id, client_secret=client_secret,
                                        client=self._oauth_client())
            bot = Bot(bot_token=pair.access or "none", bot_id="", bot_user_id="", installed_at=time.time(),
                      bot_refresh_token=pair.refresh, bot_token_expires_at=0)
            try:
                rotated = await rotator.perform_bot_token_rotation(bot=bot, minutes_before_expiration=0)
            except SlackTokenRotationError as exc:
                reason = exc.api_error.response.get("error") if exc.api_error is not None else "unknown"
                log.error("slack: refreshing the bot token failed (%s); messages wait in the outbox until it "
                          "works. If the refresh token was revoked, install the app again and put the new "
                          "refresh token in [integrations.slack]", reason)
                raise Unavailable(f"token refresh failed: {reason}") from None
            except Exception as exc:  # the network: as loud, and retried by whoever asked
                log.error("slack: refreshing the bot token failed (%s)", type(exc).__name__)
                raise Unavailable(f"token refresh failed: {type(exc).__name__}") from None
            if rotated is None or not rotated.bot_refresh_token or rotated.bot_token_expires_at is None:
                log.error("slack: oauth.v2.access did not return a bot token pair")
                raise Unavailable("token refresh returned no bot token")
            new = Pair(access=rotated.bot_token, refresh=rotated.bot_refresh_token,
                       expires_at=float(rotated.bot_token_expires_at), origin=pair.origin)
            # Durable before use: the old refresh token is spent, so losing this pair would strand the bot.
            await self._store.put(STORE_KEY, json.dumps(new.__dict__))
            self._pair = new
            self.refreshed += 1
            log.info("slack: bot token refreshed; it expires in %.0f s", new.expires_at - time.time())
            return new.access

    async def keep_fresh(self) -> None:
        """Refresh `refresh_before_s` before each expiry, forever (a task the engine owns)."""
        failures = 0
        while True:
            if self._pair is None:
                await self.load()
            pair = self._pair
            assert pair is not None
            left = pair.expires_at - time.time()
            # Never a tight loop, even when tokens live shorter than refresh_before_s.
            await asyncio.sleep(max(0.0, left - self._before, min(60.0, left / 2)))
            try:
                await self.refresh(stale=pair.access)
                failures = 0
            except Unavailable:
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]
