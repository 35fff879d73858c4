"""One webhook route's request handling, the same for every source (Alertmanager, Grafana, generic JSON).

A source differs only in how its body becomes events (a `Reader`); everything else is shared, so every source gets
the same guarantees: the sender is authenticated first (integrations/webhook/auth.py), a body is accepted whole or
not at all (parsed, read, then every alert journaled in one transaction, and only then 200), and bad input gets a
4xx with a JSON reason and nothing is stored: 401/403 (authentication, a replayed signature), 409 (the same signed
request is being handled right now), 413 (too large), 415 (not JSON), 400 (not parseable JSON, nested too deeply, a
lone surrogate in a string, raw non-ASCII bytes in a header), 422 (JSON, but not what this source sends), 503 (busy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from engine.plugin import Busy, Event, IntegrationContext, UnreadableInput, load_json
from integrations.webhook.auth import Authenticator, Refused
from integrations.webhook.replay import ReplayGuard

# What a source makes of a parsed JSON body; raises Unreadable (or pydantic's ValidationError) for a 422.
Reader = Callable[[object], list[Event]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Unreadable(ValueError):
    """The body is JSON but not what this source sends; the message says what is wrong (the 422's reason)."""


def reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def describe(exc: ValidationError) -> str:
    """The first problem pydantic found, where it is (`alerts.0.fingerprint: ...`), and how many more there are."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def make_handler(ctx: IntegrationContext, *, authenticator: Authenticator, replays: ReplayGuard, read: Reader,
                 what: str) -> Handler:
    """The aiohttp handler of one source; `what` names the payload a 422 says the body is not."""

    async def handle(request: web.Request) -> web.Response:
        try:
            authenticator.check_headers(request.headers, request.remote)
        except Refused as exc:
            return reject(exc.status, exc.reason)
        if request.content_type != "application/json":
            return reject(415, f"expected Content-Type application/json, got {request.content_type or 'none'}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return reject(413, f"body larger than {ctx.config.http.max_body_bytes} bytes")
        try:
            signed = authenticator.check_body(request.headers, body)
            held = await replays.claim(signed) if signed is not None else None
        except Refused as exc:
            return reject(exc.status, exc.reason)
        try:
            response = await accept(body)
            if held is not None and response.status == 200:
                await replays.accepted(held)
            return response
        finally:
            if held is not None:
                replays.release(held)

    async def accept(body: bytes) -> web.Response:
        """Parse, read and journal a body whose sender is authenticated."""
        try:
            raw = load_json(body)
        except UnreadableInput as exc:
            return reject(400, f"body is not valid JSON: {exc}")
        try:
            events = read(raw)
        except ValidationError as exc:
            return reject(422, f"not {what}: {describe(exc)}")
        except Unreadable as exc:
            return reject(422, f"not {what}: {exc}")
        try:
            await ctx.submit(events)
        except Busy as exc:
            return web.json_response({"error": f"try again later: {exc}"}, status=503,
                                     headers={"Retry-After": str(exc.retry_after_s)})
        return web.json_response({"accepted": len(events), "events": [e.id for e in events]})

    return handle
