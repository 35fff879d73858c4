"""Grafana unified alerting's webhook contact point payload (version "1") and its translation into alert events.

The payload is documented at
https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
It is Alertmanager's shape with Grafana's additions; we read each alert's status, labels, annotations, times,
fingerprint and its links (generatorURL, silenceURL, dashboardURL, panelURL, imageURL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.plugin import AlertData, Event, utcnow
from integrations.webhook.alertmanager import given_time

# The alert's links besides generatorURL (which becomes the alert's `url`): an alert event has one URL, so these are
# kept in its annotations under Grafana's own names, where templates can use them (`{alert.annotations.silenceURL}`).
EXTRA_LINKS = ("silenceURL", "dashboardURL", "panelURL", "imageURL")


class GrafanaAlert(BaseModel):
    # Ignored: `values`, `valueString` and whatever Grafana adds later. Built with the first Grafana POST.
    model_config = ConfigDict(extra="ignore", defer_build=True)
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str | None = None
    silenceURL: str | None = None
    dashboardURL: str | None = None
    panelURL: str | None = None
    imageURL: str | None = None
    fingerprint: str = Field(min_length=1, max_length=128)


class GrafanaPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)  # built with the first Grafana POST
    version: str = Field(pattern="^1$")
    status: str = Field(pattern="^(firing|resolved)$")
    receiver: str = ""
    orgId: int | None = None
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=10_000)
    externalURL: str | None = None


def read(raw: object) -> list[Event]:
    """The events of a Grafana body; pydantic's ValidationError (a 422) when it is not one."""
    return to_events(GrafanaPayload.model_validate(raw), source="grafana")


def to_events(payload: GrafanaPayload, *, source: str) -> list[Event]:
    """One alert event per alert: name from `alertname`, severity and service from labels, summary from the
    `summary` (else `description`) annotation, url from generatorURL; the other links go into the annotations."""
    events = []
    now = utcnow()
    for alert in payload.alerts:
        labels = alert.labels
        links = {name: url for name in EXTRA_LINKS if (url := getattr(alert, name))}
        annotations = {**links, **alert.annotations}  # an annotation of the same name is the user's: it wins
        data = AlertData(
            fingerprint=alert.fingerprint,
            status=alert.status,
            name=labels.get("alertname"),
            severity=labels.get("severity"),
            service=labels.get("service") or labels.get("job"),
            summary=alert.annotations.get("summary") or alert.annotations.get("description"),
            labels=labels,
            annotations=annotations,
            starts_at=given_time(alert.startsAt),
            ends_at=given_time(alert.endsAt),
            url=alert.generatorURL or None,
        )
        events.append(Event(source=source, time=now, data=data))
    return events
