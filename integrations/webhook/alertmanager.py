"""Prometheus Alertmanager's webhook payload (version 4) and its translation into alert events."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.events import AlertData, Event

# Alertmanager marks "not ended" with Go's zero time.
_ZERO_TIME_PREFIX = "0001-01-01"


class AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Alertmanager may add fields; we read what we know
    status: str = Field(pattern="^(firing|resolved)$")
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str = Field(min_length=1, max_length=128)


class AmPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = Field(pattern="^4$")
    status: str = Field(pattern="^(firing|resolved)$")
    receiver: str = ""
    alerts: list[AmAlert] = Field(min_length=1, max_length=10_000)
    externalURL: str | None = None


def _time(value: str | None) -> datetime | None:
    if not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_events(payload: AmPayload, *, source: str) -> list[Event]:
    """One alert event per alert in the payload. Service is the `service` label, else the `job` label."""
    events = []
    for alert in payload.alerts:
        labels = alert.labels
        events.append(Event(source=source, data=AlertData(
            fingerprint=alert.fingerprint,
            status=alert.status,  # type: ignore[arg-type]
            name=labels.get("alertname"),
            severity=labels.get("severity"),
            service=labels.get("service") or labels.get("job"),
            summary=alert.annotations.get("summary") or alert.annotations.get("description"),
            labels=labels,
            annotations=alert.annotations,
            starts_at=_time(alert.startsAt),
            ends_at=_time(alert.endsAt),
            url=alert.generatorURL,
        )))
    return events
