"""Calling the Bot API: `POST {api_url}/bot{token}/{method}` with a JSON body, its answer's envelope read and its
failures classified for Herald's shared senders.

Every answer is `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": "...",
"parameters": {"retry_after": S, "migrate_to_chat_id": ID}}` (https://core.telegram.org/bots/api#making-requests).
The token is part of the URL, so no URL is ever logged or put in an error: errors name the method only.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from engine.plugin import RateLimited, Rejected, Unavailable

NOT_MODIFIED = "message is not modified"


class Conflict(Unavailable):
    """409: another getUpdates is running with this token, or a webhook is set while polling."""


class BotApi:
    def __init__(self, http: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self._http = http
        self._base = f"{api_url.rstrip('/')}/bot{token}/"

    async def call(self, method: str, body: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> Any:
        """The method's `result`; RateLimited (429), Unavailable (5xx, network, 401), Conflict (409) or Rejected."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else None
        try:
            async with self._http.post(self._base + method, json=body or {}, timeout=timeout) as response:
                status = response.status
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # str(exc) of a connection error can hold the URL, and with it the token: name only the type.
            raise Unavailable(f"{method}: {type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise Unavailable(f"{method}: HTTP {status}, an answer that is not a Bot API envelope")
        if answer.get("ok") is True:
            return answer.get("result")
        return _failure(method, status, answer)


def _failure(method: str, status: int, answer: dict[str, Any]) -> Any:
    code = answer.get("error_code", status)
    description = str(answer.get("description") or f"HTTP {status}")
    given = answer.get("parameters")
    parameters: dict[str, Any] = given if isinstance(given, dict) else {}
    if code == 429:
        raise RateLimited(float(parameters.get("retry_after") or 1), f"{method}: {description}")
    if code == 409:
        raise Conflict(f"{method}: {description}")
    if code == 400 and NOT_MODIFIED in description:
        return True  # an edit that changes nothing has done what was asked
    if status >= 500 or code >= 500:
        raise Unavailable(f"{method}: {description}")
    if code == 401:  # a revoked or mistyped token: retried, so nothing is lost once the config is fixed
        raise Unavailable(f"{method}: {description} (the bot token was refused; check it with BotFather)")
    if "migrate_to_chat_id" in parameters:  # a group that became a supergroup has a new id
        raise Rejected(f"{method}: {description}; the group is now telegram:{parameters['migrate_to_chat_id']}")
    raise Rejected(f"{method}: {description}")
