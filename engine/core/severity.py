"""An incoming alert's severity, put on the configured scale (`[alerts] severities`, `severity_aliases`).

Sources name severities their own way (`page`, `P1`, `Critical`); rules compare on one scale. So the severity is
translated once, where the alert arrives (the engine's intake and the dry run both call `normalise`): compared in
lowercase, an alias becomes its step on the scale, and the raw value is kept in the label `severity_raw`.

A severity that is neither on the scale nor an alias is never left to match nothing in silence: it is treated as
the scale's most severe step (so `severity >= warning` and `severity critical` rules see it), the raw value stays in
`severity_raw`, and the caller reports it (a warning and a counter). Erring towards severe means an unknown word
pages someone who can then add the alias; erring the other way would drop a real page without anyone noticing.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.config import AlertsConfig
from engine.core.events import AlertData

RAW_LABEL = "severity_raw"


@dataclass(frozen=True)
class Normalised:
    data: AlertData
    unknown: str | None = None  # the raw severity, when it was neither on the scale nor an alias


def normalise(data: AlertData, alerts: AlertsConfig) -> Normalised:
    """`data` with its severity on the scale (unchanged when it already is, or has none: absent or empty)."""
    raw = data.severity
    if raw is None or not raw.strip() or raw in alerts.severities:  # an empty label is no severity, not an unknown one
        return Normalised(data)
    word = raw.strip().lower()
    if word in alerts.severities:
        severity, unknown = word, None
    elif word in alerts.severity_aliases:
        severity, unknown = alerts.severity_aliases[word], None
    else:
        severity, unknown = alerts.severities[-1], raw
    labels = {**data.labels, RAW_LABEL: raw}
    return Normalised(data.model_copy(update={"severity": severity, "labels": labels}), unknown)
