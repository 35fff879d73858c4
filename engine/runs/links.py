"""An alert's web links as the link buttons of its notification: runbook, dashboard, panel, source, silence.

Where they come from: the alert's `url` (Alertmanager's and Grafana's `generatorURL`, the generic source's mapped
URL) and the usual annotations: Prometheus rules' `runbook_url` and `dashboard_url`, and Grafana's `dashboardURL`,
`panelURL` and `silenceURL` (which the Grafana source keeps in the annotations). Each must be an http(s) URL
(engine.delivery.message.url_problem): anything else (`javascript:`, a relative path, a URL with a password) is left
out, and logged, never shown as something to tap.
"""

from __future__ import annotations

import logging

from engine.core.events import AlertData
from engine.delivery.message import LinkButton, url_problem

log = logging.getLogger("herald.alerts")
MAX_LINKS = 5  # one row on every platform (Discord: five buttons a row)
# (annotation, label), in the order the buttons are shown; the alert's own `url` comes in as "Source".
ANNOTATION_LINKS = (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"), ("dashboardURL", "Dashboard"),
                    ("panelURL", "Panel"))
SOURCE_LABEL = "Source"
SILENCE = ("silenceURL", "Silence")


def alert_links(data: AlertData) -> tuple[LinkButton, ...]:
    """The link buttons of a notification about this alert: each valid URL once, at most MAX_LINKS."""
    found: list[tuple[str, str]] = [(label, data.annotations.get(key, "")) for key, label in ANNOTATION_LINKS]
    found.append((SOURCE_LABEL, data.url or ""))
    found.append((SILENCE[1], data.annotations.get(SILENCE[0], "")))
    links: list[LinkButton] = []
    seen: set[str] = set()
    for label, url in found:
        url = url.strip()
        if not url or url in seen or any(link.label == label for link in links):
            continue
        problem = url_problem(url)
        if problem is not None:
            log.warning("alert %s: its %s link is left out: %s", data.name or data.fingerprint, label, problem)
            continue
        seen.add(url)
        links.append(LinkButton(label=label, url=url))
    return tuple(links[:MAX_LINKS])
