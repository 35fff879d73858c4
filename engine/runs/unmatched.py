"""Alerts no rule matched: never dropped in silence.

A firing alert that matches no rule is counted (`herald_alerts_unmatched_total`) and, with `[alerts] unmatched =
"TEAM"`, sent to that team as a plain notification with Acknowledge and Mute buttons, through the same delivery path
as a rule's `notify`. It is a notification about the alert like any other, so it follows the alert: acknowledged,
muted or resolved, it is edited to say so (engine/delivery `follow`). Without that setting it is a warning in the log
naming the alert. A resolve that matches no rule is not unmatched: it is usually the end of an alert some rule
handled when it fired, and the runtime edits that alert's notifications either way.
"""

from __future__ import annotations

import logging

from engine.core.events import AlertData, Event
from engine.delivery.outlets import Button, Notification
from engine.delivery.storm import alert_line
from engine.runs.actions import audience_for
from engine.runs.alerts import DEFAULT_SPECS
from engine.runs.links import alert_links
from engine.runs.run import Services, summarize

log = logging.getLogger("herald.unmatched")

RULE = "(no rule matched)"  # what stands for the rule in the notification, its buttons and the audit


class Unmatched:
    def __init__(self) -> None:
        self.count = 0  # firing alerts no rule matched, since start

    async def alert(self, event: Event, data: AlertData, services: Services) -> None:
        """Deal with an alert event no rule matched."""
        if data.status == "resolved":
            return
        self.count += 1
        team = services.config.alerts.unmatched
        if team is None:
            log.warning("alert %s (severity %s, service %s) matched no rule and [alerts] unmatched names no team, "
                        "so nobody is told", data.name or data.fingerprint, data.severity or "none",
                        data.service or "none")
            return
        if await services.alerts.muted_until(data.fingerprint) is not None:
            return  # someone muted it from an earlier notification
        audience = audience_for(team, services)
        if audience is None:  # validated when the config loaded; a rule file cannot remove a configured team
            log.warning("alert %s matched no rule and the unmatched team %r does not exist",
                        data.name or data.fingerprint, team)
            return
        buttons: tuple[Button, ...] = await services.alerts.make_buttons(
            event_id=event.id, rule=RULE, fingerprint=data.fingerprint, specs=DEFAULT_SPECS)
        services.board.offered(data.fingerprint, buttons)
        note = Notification(event_id=event.id, rule=RULE, text=f"{summarize(event)} (no rule matched this alert)",
                            buttons=buttons, severity=data.severity, alert=data.fingerprint,
                            links=alert_links(data), line=alert_line(data))
        # The key is derived from the event, so handling it again after a crash sends nothing twice.
        await services.delivery.notify(audience, note, key=f"unmatched/{event.id}")
