"""Webhooks that turn monitoring alerts into events, one route per source:

- `POST /hooks/alertmanager`: Prometheus Alertmanager's payload (version 4), integrations/webhook/alertmanager.py;
- `POST /hooks/grafana`: Grafana unified alerting's webhook contact point (version 1), integrations/webhook/grafana.py;
- `POST /hooks/generic/<name>`: any JSON, read through the mapping `[integrations.webhook.generic.<name>]`,
  integrations/webhook/generic.py.

Every source is authenticated, size-limited, accepted whole or not at all and protected against replays in the same
way (integrations/webhook/hook.py), each with its own credentials.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import BaseModel

from engine.plugin import Event, IntegrationContext, Manifest, Unload
from integrations.webhook import grafana
from integrations.webhook.alertmanager import AmPayload, to_events
from integrations.webhook.auth import GRAFANA_SIGNATURE, HERALD_SIGNATURE, Authenticator, SignatureScheme, SourceAuth
from integrations.webhook.generic import GenericReader
from integrations.webhook.hook import Handler, Reader, make_handler, reject
from integrations.webhook.replay import ReplayGuard
from integrations.webhook.settings import WebhookConfig

AM_PAYLOAD = "an Alertmanager webhook payload (version 4)"
GRAFANA_PAYLOAD = "a Grafana webhook payload (version 1)"


def read_alertmanager(raw: object) -> list[Event]:
    return to_events(AmPayload.model_validate(raw), source="alertmanager")


def readers(config: BaseModel | None) -> Mapping[str, Reader]:
    """Every source this config turns on, by name (`alertmanager`, `grafana`, `generic/<name>`): the dry run reads a
    saved body through the same reader the live route uses."""
    sources: dict[str, Reader] = {"alertmanager": read_alertmanager, "grafana": grafana.read}
    if isinstance(config, WebhookConfig):
        sources.update({f"generic/{name}": GenericReader(mapping, source=f"generic/{name}")
                        for name, mapping in config.generic.items()})
    return sources


class WebhookIntegration:
    manifest = Manifest(name="webhook", description="Alerts by webhook from Alertmanager, Grafana and any JSON sender",
                        provides=("trigger:alert",), config_model=WebhookConfig,
                        decode=read_alertmanager, sources=readers)

    async def setup(self, ctx: IntegrationContext) -> Unload:
        config = ctx.integration_config("webhook")
        assert isinstance(config, WebhookConfig)  # validated when the config loaded
        store = ctx.store("webhook")

        def handler(source: str, auth: SourceAuth, read: Reader, what: str,
                    scheme: SignatureScheme = HERALD_SIGNATURE) -> Handler:
            # Each source has its own credentials and its own replay memory: signatures of two sources never meet.
            authenticator = Authenticator(auth, allow_loopback=config.allow_unauthenticated_loopback, scheme=scheme)
            return make_handler(ctx, authenticator=authenticator, replays=ReplayGuard(store, source), read=read,
                                what=what)

        ctx.routes.add_post("/hooks/alertmanager", handler("alertmanager", config.alertmanager, read_alertmanager,
                                                           AM_PAYLOAD))
        ctx.routes.add_post("/hooks/grafana", handler("grafana", config.grafana, grafana.read, GRAFANA_PAYLOAD,
                                                      GRAFANA_SIGNATURE))
        generic = {name: handler(f"generic/{name}", mapping, GenericReader(mapping, source=f"generic/{name}"),
                                 f"what [integrations.webhook.generic.{name}] reads")
                   for name, mapping in config.generic.items()}

        async def generic_hook(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            hook = generic.get(name)
            if hook is None:  # not which ones are: the caller is not authenticated yet
                return reject(404, f"no generic source {name!r} is configured ([integrations.webhook.generic.{name}])")
            return await hook(request)

        ctx.routes.add_post("/hooks/generic/{name}", generic_hook)

        async def unload() -> None:
            return None  # routes go away with the web application

        return unload


integration = WebhookIntegration()
