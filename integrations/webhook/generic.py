"""Alerts from any JSON sender, read through a mapping declared in the config: `POST /hooks/generic/<name>`.

    [integrations.webhook.generic.uptime]
    fingerprint = "id"                # dotted paths into the JSON body
    status = "state"
    firing_values = ["down"]          # what `status` says for firing / resolved
    resolved_values = ["up"]
    severity = "level"
    service = "check.service"
    summary = "message"
    labels = "tags"                   # an object of text (or numbers, true/false)
    url = "link"

A body is one alert (a JSON object) or a list of them. Every path the mapping names must be in every alert: a body
the mapping cannot read is refused whole (422) with the field that is missing, e.g. `field 'check.service'
(service) is missing`, so a sender that changed its format is noticed at once instead of alerting half-empty.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.plugin import AlertData, Event, utcnow
from integrations.webhook.auth import SourceAuth
from integrations.webhook.hook import Unreadable

_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # one URL path segment: /hooks/generic/<name>
MAX_ALERTS = 10_000
# The mapping's text fields, in the order they are read (so the first missing one is reported).
TEXT_FIELDS = ("fingerprint", "status", "name", "severity", "service", "summary", "url")


class GenericSource(SourceAuth):
    """`[integrations.webhook.generic.<name>]`: how to authenticate the sender (as for Alertmanager) and where each
    part of an alert is in its JSON body."""

    fingerprint: str  # what identifies the alert across firing and resolved
    status: str | None = None  # without it, every alert is firing
    firing_values: list[str] = Field(default_factory=lambda: ["firing"])
    resolved_values: list[str] = Field(default_factory=lambda: ["resolved"])
    name: str | None = None
    severity: str | None = None
    service: str | None = None
    summary: str | None = None
    labels: str | None = None
    url: str | None = None

    @field_validator("fingerprint", "status", "name", "severity", "service", "summary", "labels", "url")
    @classmethod
    def _dotted_path(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a dotted path into the JSON body, such as 'check.service'")
        return value

    @model_validator(mode="after")
    def _status_values(self) -> GenericSource:
        given = {"firing_values", "resolved_values"} & self.model_fields_set
        if given and self.status is None:
            raise ValueError(f"{' and '.join(sorted(given))} need `status`, the path of the alert's status")
        if not self.firing_values or not self.resolved_values:
            raise ValueError("firing_values and resolved_values each need at least one value")
        both = set(self.firing_values) & set(self.resolved_values)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} is in both firing_values and resolved_values")
        return self


class GenericReader:
    """The Reader (integrations/webhook/hook.py) of one generic source: a parsed body in, its alert events out."""

    def __init__(self, mapping: GenericSource, source: str) -> None:
        self._mapping = mapping
        self._source = source

    def __call__(self, raw: object) -> list[Event]:
        alerts = raw if isinstance(raw, list) else [raw]
        if not alerts:
            raise Unreadable("the body is an empty list: expected an alert (a JSON object) or a list of them")
        if len(alerts) > MAX_ALERTS:
            raise Unreadable(f"{len(alerts)} alerts in one body; at most {MAX_ALERTS}")
        now = utcnow()
        events = []
        for index, alert in enumerate(alerts):
            where = f"alert {index}: " if isinstance(raw, list) else ""
            try:
                data = self.alert(alert)
            except Unreadable as exc:
                raise Unreadable(f"{where}{exc}") from None
            events.append(Event(source=self._source, time=now, data=data))
        return events

    def alert(self, body: object) -> AlertData:
        if not isinstance(body, dict):
            raise Unreadable(f"expected a JSON object, found {_json_type(body)}")
        mapping = self._mapping
        text = {role: _text(body, path, role) for role in TEXT_FIELDS if (path := getattr(mapping, role))}
        labels = _labels(body, mapping.labels) if mapping.labels else {}
        return AlertData(fingerprint=_fingerprint(text["fingerprint"]), status=self._status(text.get("status")),
                         name=text.get("name") or self._source.removeprefix("generic/"),
                         severity=text.get("severity"), service=text.get("service"), summary=text.get("summary"),
                         labels=labels, url=text.get("url"))

    def _status(self, value: str | None) -> Literal["firing", "resolved"]:
        mapping = self._mapping
        if value is None:
            return "firing"
        if value in mapping.firing_values:
            return "firing"
        if value in mapping.resolved_values:
            return "resolved"
        raise Unreadable(f"field {mapping.status!r} (status) is {value!r}, expected one of "
                         f"{', '.join(mapping.firing_values)} (firing) or {', '.join(mapping.resolved_values)} "
                         "(resolved)")


def _lookup(body: dict[str, object], path: str, role: str) -> object:
    value: object = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise Unreadable(f"field {path!r} ({role}) is missing")
        value = value[part]
    if value is None:
        raise Unreadable(f"field {path!r} ({role}) is missing (null)")
    return value


def _text(body: dict[str, object], path: str, role: str) -> str:
    return _scalar(_lookup(body, path, role), path, role)


def _scalar(value: object, path: str, role: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise Unreadable(f"field {path!r} ({role}) is {_json_type(value)}, expected text or a number")


def _labels(body: dict[str, object], path: str) -> dict[str, str]:
    value = _lookup(body, path, "labels")
    if not isinstance(value, dict):
        raise Unreadable(f"field {path!r} (labels) is {_json_type(value)}, expected an object")
    return {str(key): _scalar(item, f"{path}.{key}", "a label") for key, item in value.items()}


def _fingerprint(value: str) -> str:
    if not 1 <= len(value) <= 128:
        raise Unreadable("the fingerprint must be 1 to 128 characters")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text"
    return "true/false" if isinstance(value, bool) else "a number"
