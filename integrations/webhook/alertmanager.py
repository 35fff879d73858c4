"""Prometheus Alertmanager's webhook payload (version 4) and its translation into alert events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.plugin import AlertData, Event, utcnow

# Alertmanager marks "not ended" with Go's zero time.
_GO_ZERO_YEAR = 1


class AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Alertmanager may add fields; we read what we know
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # RFC 3339; a bad time is a 422 like any other bad field
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str = Field(min_length=1, max_length=128)


class AmPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = Field(pattern="^4$")
    status: str = Field(pattern="^(firing|resolved)$")
    receiver: str = ""
    alerts: list[AmAlert] = Field(min_length=1, max_length=10_000)
    externalURL: str | None = None


def given_time(value: datetime | None) -> datetime | None:
    """None for Go's zero time, which Alertmanager and Grafana send for "not ended"."""
    return None if value is None or value.year == _GO_ZERO_YEAR else value


def to_events(payload: AmPayload, *, source: str) -> list[Event]:
    """One alert event per alert in the payload. Service is the `service` label, else the `job` label."""
    events = []
    now = utcnow()
    for alert in payload.alerts:
        labels, annotations = alert.labels, alert.annotations
        data = AlertData(
            fingerprint=alert.fingerprint,
            status=alert.status,
            name=labels.get("alertname"),
            severity=labels.get("severity"),
            service=labels.get("service") or labels.get("job"),
            summary=annotations.get("summary") or annotations.get("description"),
            labels=labels,
            annotations=annotations,
            starts_at=given_time(alert.startsAt),
            ends_at=given_time(alert.endsAt),
            url=alert.generatorURL,
        )
        events.append(Event(source=source, time=now, data=data))
    return events
