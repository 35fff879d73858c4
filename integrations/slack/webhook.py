"""HTTP mode: Slack posts slash commands, button presses and events to Herald's routes, each request signed.

    POST /hooks/slack/commands        application/x-www-form-urlencoded (a slash command)
    POST /hooks/slack/interactivity   form-encoded `payload=<JSON>` (block_actions)
    POST /hooks/slack/events          JSON (url_verification, event_callback)

Every request is verified before its body is read as anything (https://api.slack.com/authentication/verifying-
requests-from-slack): `X-Slack-Signature` is `v0=` + HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}"), and
`X-Slack-Request-Timestamp` must be within five minutes of now (slack_sdk's SignatureVerifier checks both). A bad or
stale signature is answered 401 and logged at warning: the plugin facade has no audit call for integrations.
The answer (200, empty) is sent once the item is journaled, well within Slack's 3 seconds.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from engine.plugin import IntegrationContext, UnreadableInput, ascii_header
from integrations.slack.inbound import Inbound

log = logging.getLogger("herald.slack")

WINDOW_S = 300
ROUTES = {"commands": "slash_commands", "interactivity": "interactive", "events": "events_api"}


def add_routes(ctx: IntegrationContext, inbound: Inbound, signing_secret: str) -> None:
    verifier = SignatureVerifier(signing_secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        refusal = _check(verifier, request, body)
        if refusal is not None:
            log.warning("slack: refused %s from %s: %s", request.path, request.remote, refusal)
            return web.json_response({"error": refusal}, status=401)
        route = request.match_info["route"]
        try:
            payload = _read(route, body)
        except (ValueError, UnicodeDecodeError, UnreadableInput) as exc:
            return web.json_response({"error": f"unreadable body: {exc}"}, status=400)
        if payload is None:
            return web.Response(status=200)  # ssl_check, or nothing Herald takes
        if payload.get("type") == "url_verification":
            return web.json_response({"challenge": payload.get("challenge")})
        try:
            await inbound.handle(ROUTES[route], payload)
        except Exception:  # not 200: Slack retries an event, and its key makes the retry the same event
            log.exception("slack: handling %s failed", request.path)
            return web.json_response({"error": "internal error"}, status=500)
        return web.Response(status=200)

    ctx.routes.add_post("/hooks/slack/{route:" + "|".join(ROUTES) + "}", receive)


def _check(verifier: SignatureVerifier, request: web.Request, body: bytes) -> str | None:
    try:
        stamp = ascii_header(request.headers, "X-Slack-Request-Timestamp")
        signature = ascii_header(request.headers, "X-Slack-Signature")
    except UnreadableInput:
        return "unreadable signature headers"
    if not stamp or not signature:
        return "missing X-Slack-Signature or X-Slack-Request-Timestamp"
    try:
        if abs(time.time() - int(stamp)) > WINDOW_S:
            return "stale timestamp (more than 5 minutes off)"
    except ValueError:
        return "X-Slack-Request-Timestamp is not a unix time"
    if not verifier.is_valid(body=body, timestamp=stamp, signature=signature):
        return "bad signature"
    return None


def _read(route: str, body: bytes) -> dict[str, Any] | None:
    if route == "events":
        payload = json.loads(body)
        return payload if isinstance(payload, dict) else None
    form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    if form.get("ssl_check") == "1":
        return None
    if route == "interactivity":
        payload = json.loads(form.get("payload") or "null")
        return payload if isinstance(payload, dict) else None
    return form
