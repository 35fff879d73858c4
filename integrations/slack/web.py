"""Slack's Web API through slack_sdk's AsyncWebClient, with every failure classified for Herald's outbox.

The client shares the engine's aiohttp session (one connection pool; the engine closes it; the bearer token travels
per request, so nothing about the bot sticks to the session). No slack_sdk retry handler runs on the send path: a
429 must reach the outbox as RateLimited (it pauses the whole conversation and keeps the message durable), and a
dropped connection as Unavailable (the outbox retries with backoff). Answers that do not go through the outbox (a
refusal shown to one person) use a client with slack_sdk's rate-limit retry handler instead (`answers=True`).

A call made with a token Slack calls expired or invalid is retried once after a refresh, when tokens rotate.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from engine.plugin import IntegrationContext, RateLimited, Rejected, Unavailable
from integrations.slack.tokens import Tokens

log = logging.getLogger("herald.slack")
# slack_sdk logs whole responses at DEBUG (oauth.v2.access answers hold the new token pair, apps.connections.open a
# ticket), whenever its logger's own level is at or below DEBUG. Its own logger, never below INFO, keeps them out.
sdk_log = logging.getLogger("herald.slack.sdk")
sdk_log.setLevel(logging.INFO)

# Slack's own words for "try again later", sent with HTTP 200 and ok=false.
_TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout",
                        "team_added_to_org"})
_DEAD_TOKEN = frozenset({"token_expired", "invalid_auth"})


class SlackWeb:
    def __init__(self, ctx: IntegrationContext, *, api_url: str, tokens: Tokens) -> None:
        self._ctx = ctx
        self._api_url = api_url
        self.tokens = tokens

    def client(self, token: str | None, *, answers: bool = False) -> AsyncWebClient:
        return make_client(self._ctx, self._api_url, token, answers=answers)

    async def call(self, method: str, body: dict[str, Any], *, answers: bool = False) -> dict[str, Any]:
        """One Web API call with the bot token; RateLimited, Unavailable or Rejected when it fails."""
        token = await self.tokens.access()
        try:
            return await self._call_once(method, body, token, answers=answers)
        except _DeadToken:
            if not self.tokens.rotates:
                log.error("slack: %s refused the bot token; check bot_token in [integrations.slack]", method)
                raise Rejected(f"{method}: the bot token was refused") from None
            log.warning("slack: %s: the access token expired; refreshing it and trying once more", method)
            token = await self.tokens.refresh(stale=token)
            try:
                return await self._call_once(method, body, token, answers=answers)
            except _DeadToken:
                raise Unavailable(f"{method}: the refreshed token was refused too") from None

    async def _call_once(self, method: str, body: dict[str, Any], token: str, *, answers: bool) -> dict[str, Any]:
        try:
            response = await self.client(token, answers=answers).api_call(method, json=body)
        except SlackApiError as exc:
            raise classify(method, exc) from None
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise Unavailable(f"{method}: {type(exc).__name__}") from None
        return dict(response.data) if isinstance(response.data, dict) else {}


def make_client(ctx: IntegrationContext, api_url: str, token: str | None, *, answers: bool = False) -> AsyncWebClient:
    handlers: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=1)] if answers else []
    return AsyncWebClient(token=token, base_url=api_url, session=ctx.http, retry_handlers=handlers, logger=sdk_log)


class _DeadToken(Exception):
    """The token was refused (expired or revoked): worth one refresh when tokens rotate."""


def classify(method: str, exc: SlackApiError) -> Exception:
    """What a failed call means for the outbox. Never quotes the request (it may hold a token)."""
    response = exc.response
    status = response.status_code
    error = response.data.get("error") if isinstance(response.data, dict) else None
    if status == 429 or error == "ratelimited":
        return RateLimited(float(response.headers.get("Retry-After") or 1), method)
    if status >= 500 or error in _TRANSIENT:
        return Unavailable(f"{method}: HTTP {status} {error or ''}".rstrip())
    if error in _DEAD_TOKEN:
        return _DeadToken(error)
    return Rejected(f"{method}: {error or f'HTTP {status}'}")


async def post_response(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bool:
    """Answer through an interaction's response_url (valid 30 minutes, 5 times; no token needed). False when the
    URL is used up or expired (the caller falls back to the Web API). The URL itself is a credential: never logged."""
    try:
        async with http.post(url, json=body) as response:
            status = response.status
            retry_after = response.headers.get("Retry-After")
            await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"response_url: {type(exc).__name__}") from None
    if status == 429:
        raise RateLimited(float(retry_after or 1), "response_url")
    if status >= 500:
        raise Unavailable(f"response_url: HTTP {status}")
    return status < 400
