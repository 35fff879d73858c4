"""Webhooks that turn monitoring alerts into events: `POST /hooks/alertmanager` (Alertmanager payload v4).

A sender is authenticated first (integrations/webhook/auth.py). A body is accepted whole or not at all: it is
parsed and validated, then every alert in it is journaled in one transaction, and only then does the sender get 200.
Bad input gets a 4xx with a JSON reason and nothing is stored: 401/403 (authentication, a replayed signature), 409
(the same signed request is being handled right now), 413 (too large), 415 (not JSON), 400 (not parseable JSON,
nested too deeply, a lone surrogate in a string, raw non-ASCII bytes in a header), 422 (JSON, but not an Alertmanager
payload).
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import ValidationError

from engine.plugin import Busy, IntegrationContext, Manifest, Unload, UnreadableInput, load_json
from integrations.webhook.alertmanager import AmPayload, to_events
from integrations.webhook.auth import Authenticator, Refused, WebhookConfig
from integrations.webhook.replay import ReplayGuard

log = logging.getLogger("herald.webhook")


def _reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class WebhookIntegration:
    manifest = Manifest(name="webhook", description="Alerts from Prometheus Alertmanager by webhook",
                        provides=("trigger:alert",), config_model=WebhookConfig,
                        decode=lambda body: to_events(AmPayload.model_validate(body), source="alertmanager"))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        config = ctx.integration_config("webhook")
        assert isinstance(config, WebhookConfig)  # validated when the config loaded
        authenticator = Authenticator(config.alertmanager, allow_loopback=config.allow_unauthenticated_loopback)

        replays = ReplayGuard(ctx.store("webhook"), "alertmanager")

        async def alertmanager(request: web.Request) -> web.Response:
            try:
                authenticator.check_headers(request.headers, request.remote)
            except Refused as exc:
                return _reject(exc.status, exc.reason)
            if request.content_type != "application/json":
                return _reject(415, f"expected Content-Type application/json, got {request.content_type or 'none'}")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _reject(413, f"body larger than {ctx.config.http.max_body_bytes} bytes")
            try:
                signed = authenticator.check_body(request.headers, body)
                held = await replays.claim(signed) if signed is not None else None
            except Refused as exc:
                return _reject(exc.status, exc.reason)
            try:
                response = await _accept(body)
                if held is not None and response.status == 200:
                    await replays.accepted(held)
                return response
            finally:
                if held is not None:
                    replays.release(held)

        async def _accept(body: bytes) -> web.Response:
            """Parse, validate and journal a body whose sender is authenticated."""
            try:
                raw = load_json(body)
            except UnreadableInput as exc:
                return _reject(400, f"body is not valid JSON: {exc}")
            try:
                payload = AmPayload.model_validate(raw)
            except ValidationError as exc:
                return _reject(422, f"not an Alertmanager webhook payload (version 4): {_describe(exc)}")
            events = to_events(payload, source="alertmanager")
            try:
                await ctx.submit(events)
            except Busy as exc:
                return web.json_response({"error": f"try again later: {exc}"}, status=503,
                                         headers={"Retry-After": "1"})
            return web.json_response({"accepted": len(events), "events": [e.id for e in events]})

        ctx.routes.add_post("/hooks/alertmanager", alertmanager)

        async def unload() -> None:
            return None  # routes go away with the web application

        return unload


integration = WebhookIntegration()
