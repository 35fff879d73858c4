"""Webhook mode: Telegram POSTs each update to `webhook_url`, which must reach Herald's `POST /hooks/telegram`.

`setWebhook` registers the URL with a random `secret_token`; Telegram sends it back in the
`X-Telegram-Bot-Api-Secret-Token` header of every request, and a request without it (401) or with another (403)
is refused before its body is read, compared in constant time. An update is journaled before the 200, so an
answer lost on the way makes Telegram send it again, and its key makes that the same event.

The secret is kept in the integration's store and reused after a restart (and `setWebhook` is called again at
every start, in case the URL changed): Telegram retries the updates it could not deliver with the secret it was
registered with, so a fresh secret per start would refuse those retries until the new registration arrives. The
webhook is left in place when Herald stops, so Telegram holds the updates sent meanwhile (for up to 24 hours).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.plugin import Busy, IntegrationContext, UnreadableInput, load_json
from integrations.telegram.api import BotApi
from integrations.telegram.polling import ALLOWED_UPDATES
from integrations.telegram.updates import Receiver, backoff

log = logging.getLogger("herald.telegram")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_KEY = "webhook_secret"
IDENTIFY_WAIT_S = 10.0


async def webhook_secret(ctx: IntegrationContext) -> str:
    """The secret_token Telegram must send back: the stored one, or a new one (1-256 of A-Z a-z 0-9 _ -)."""
    store = ctx.store("telegram")
    secret = await store.get(SECRET_KEY)
    if not secret:
        secret = secrets.token_urlsafe(48)
        await store.put(SECRET_KEY, secret)
    return secret


def hook(receiver: Receiver, secret: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    expected = secret.encode()

    async def telegram(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return _refuse(401, f"missing {SECRET_HEADER}")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return _refuse(403, f"wrong {SECRET_HEADER}")
        try:
            update = load_json(await request.read())
        except UnreadableInput as exc:
            return _refuse(400, f"body is not valid JSON: {exc}")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return _refuse(400, "not a Telegram Update (no update_id)")
        try:  # a command's @botname is only read once getMe has said who the bot is
            await asyncio.wait_for(receiver.identified.wait(), IDENTIFY_WAIT_S)
        except TimeoutError:
            return _refuse(503, "starting; send it again")
        try:
            await receiver.handle(update)  # journaled (or refused) before Telegram hears 200; an error is a 500
        except Busy as exc:
            return web.json_response({"error": f"try again later: {exc}"}, status=503,
                                     headers={"Retry-After": str(exc.retry_after_s)})
        return web.Response(status=200)

    return telegram


async def register(api: BotApi, receiver: Receiver, url: str, secret: str) -> None:
    """Learn who the bot is, then point Telegram at `url`; retried until Telegram accepts."""
    await receiver.identify()
    failures = 0
    while True:
        try:
            await api.call("setWebhook", {"url": url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES,
                                          "drop_pending_updates": False})
            log.info("telegram: webhook registered")  # not the URL: some put a secret path in it
            return
        except Exception as exc:  # noqa: BLE001 - retried; the reason is logged (it never holds the token)
            failures += 1
            log.warning("telegram: setWebhook failed (%s); retrying", exc)
            await asyncio.sleep(backoff(failures))


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)
