"""Alerts no rule matched: never dropped in silence.

A firing alert that matches no rule is counted (`herald_alerts_unmatched_total`) and, with `[alerts] unmatched =
"TEAM"`, sent to that team as a plain notification with Acknowledge and Mute buttons, through the same delivery path
as a rule's `notify`. Without that setting it is a warning in the log naming the alert. The resolve of an alert sent
this way goes to the same team (remembered in memory for the last `REMEMBERED` such alerts: after a restart a resolve
of an earlier one is not forwarded); other resolves that match no rule are the normal end of an alert some rule
handled when it fired, so they are not unmatched.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from engine.core.events import AlertData, Event
from engine.delivery.outlets import Button, Notification
from engine.runs.actions import audience_for
from engine.runs.alerts import DEFAULT_SPECS
from engine.runs.run import Services, summarize

log = logging.getLogger("herald.unmatched")

RULE = "(no rule matched)"  # what stands for the rule in the notification, its buttons and the audit
REMEMBERED = 10_000


class Unmatched:
    def __init__(self) -> None:
        self.count = 0  # firing alerts no rule matched, since start
        self._sent: OrderedDict[str, None] = OrderedDict()  # fingerprints whose firing went to the unmatched team

    async def alert(self, event: Event, data: AlertData, services: Services) -> None:
        """Deal with an alert event no rule matched."""
        team = services.config.alerts.unmatched
        if data.status == "resolved":
            if team is not None and data.fingerprint in self._sent:
                del self._sent[data.fingerprint]
                await self._notify(event, data, team, services, buttons=False)
            return
        self.count += 1
        if team is None:
            log.warning("alert %s (severity %s, service %s) matched no rule and [alerts] unmatched names no team, "
                        "so nobody is told", data.name or data.fingerprint, data.severity or "none",
                        data.service or "none")
            return
        if await services.alerts.muted_until(data.fingerprint) is not None:
            return  # someone muted it from an earlier notification
        await self._notify(event, data, team, services, buttons=True)
        self._sent[data.fingerprint] = None
        self._sent.move_to_end(data.fingerprint)
        if len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)

    async def _notify(self, event: Event, data: AlertData, team: str, services: Services, *, buttons: bool) -> None:
        audience = audience_for(team, services)
        if audience is None:  # validated when the config loaded; a rule file cannot remove a configured team
            log.warning("alert %s matched no rule and the unmatched team %r does not exist",
                        data.name or data.fingerprint, team)
            return
        offered: tuple[Button, ...] = ()
        if buttons:
            offered = await services.alerts.make_buttons(event_id=event.id, rule=RULE, fingerprint=data.fingerprint,
                                                         specs=DEFAULT_SPECS)
            services.board.offered(data.fingerprint, offered)
        note = Notification(event_id=event.id, rule=RULE, text=f"{summarize(event)} (no rule matched this alert)",
                            buttons=offered, severity=data.severity)
        # The key is derived from the event, so handling it again after a crash sends nothing twice.
        await services.delivery.notify(audience, note, key=f"unmatched/{event.id}")
