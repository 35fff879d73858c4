"""Discord's REST API: one call, its failure classified, and a small per-route gate for its rate limits.

Every answer carries `X-RateLimit-Remaining` and `X-RateLimit-Reset-After` for the route's bucket; when a bucket is
spent (remaining 0) the next call on it waits until the bucket resets instead of earning a 429 (Discord counts 429s
towards a temporary ban of the IP). A 429 still happens (a limit shared with other clients, the global limit): it is
raised as RateLimited with the body's `retry_after` (seconds, a float), and a global one holds every route.

Routes are named by the caller (`POST /channels/123/messages`, `PATCH /webhooks/{app}/{token}/...`): the name is
the gate's key (the method and path with the top-level id Discord limits separately) and the only thing ever put in
a log or an error message, because some paths carry an interaction token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from engine.plugin import RateLimited, Rejected, Unavailable

log = logging.getLogger("herald.discord")

MAX_GATE_WAIT_S = 60.0  # a bucket that resets later than this is reported as RateLimited instead of waited out


class DiscordRejected(Rejected):
    """Discord refused the call for good; `code` is its JSON error code (10003 Unknown Channel, 50001...)."""

    def __init__(self, route: str, status: int, code: int | None, message: str) -> None:
        super().__init__(f"{route}: HTTP {status}" + (f" {code}" if code is not None else "") + f" {message}")
        self.status = status
        self.code = code


class DiscordRest:
    def __init__(self, http: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self._http = http
        self._base = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bot {token}", "User-Agent": "DiscordBot (https://herald.dev, 0.1)"}
        self._spent_until: dict[str, float] = {}  # route -> monotonic time its bucket resets
        self._global_until = 0.0

    async def call(self, method: str, path: str, *, route: str, json: Any = None,
                   params: dict[str, str] | None = None) -> Any:
        """`method {api_url}{path}`; the decoded JSON answer (None for 204). Raises RateLimited, Unavailable or
        DiscordRejected; `route` names the call in errors and keys its rate-limit gate."""
        await self._gate(route)
        try:
            async with self._http.request(method, self._base + path, json=json, params=params,
                                          headers=self._headers) as response:
                self._note_bucket(route, response.headers)
                body = None if response.status == 204 else await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"{route}: {type(exc).__name__}") from None
        if response.status == 429:
            retry_after = _seconds((body or {}).get("retry_after"), response.headers.get("Retry-After"))
            if (body or {}).get("global") or response.headers.get("X-RateLimit-Global") == "true":
                self._global_until = time.monotonic() + retry_after
            else:
                self._spent_until[route] = time.monotonic() + retry_after
            raise RateLimited(retry_after, f"{route}: 429" + (" (global)" if (body or {}).get("global") else ""))
        if response.status >= 500:
            raise Unavailable(f"{route}: HTTP {response.status}")
        if response.status >= 400:
            error = body if isinstance(body, dict) else {}
            raise DiscordRejected(route, response.status, error.get("code"), str(error.get("message", "")))
        return body

    async def _gate(self, route: str) -> None:
        wait = max(self._global_until, self._spent_until.get(route, 0.0)) - time.monotonic()
        if wait > MAX_GATE_WAIT_S:
            raise RateLimited(wait, f"{route}: bucket spent")
        if wait > 0:
            log.debug("discord: %s waits %.2fs for its rate-limit bucket", route, wait)
            await asyncio.sleep(wait)

    def _note_bucket(self, route: str, headers: Any) -> None:
        if headers.get("X-RateLimit-Remaining") == "0":
            reset_after = _seconds(headers.get("X-RateLimit-Reset-After"), None)
            self._spent_until[route] = time.monotonic() + reset_after
        else:
            self._spent_until.pop(route, None)


def _seconds(value: Any, fallback: str | None) -> float:
    for candidate in (value, fallback):
        try:
            return max(0.0, float(candidate))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return 1.0
