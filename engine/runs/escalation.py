"""Escalation policies at run time (issue 19): `escalate to oncall after 5m, to managers after 15m, repeat every
30m until acknowledged`.

One persisted timer per (rule, clause, alert) walks the policy: its payload holds the steps, the repeat, which step
is next and when the escalation was armed (the alert's first firing that ran the rule), so a restart neither loses
nor restarts it. When a step comes due:

- resolved: audited `escalation.skipped`, and the policy ends there;
- acknowledged: audited `escalation.skipped`, and the policy stops at this step: it is kept aside (the alert's
  `escalation_paused`, dropped when the alert resolves) for an unacknowledgement to resume;
- muted (a silence): audited `escalation.skipped` for this step only; the policy goes on, so a 30m mute of an alert
  nobody fixes does not end its escalation for good;
- otherwise the step's target is notified (with the alert's buttons, following the alert like any notification),
  audited `escalation.sent`, and the alert records it, so every message about it shows "Escalated to managers at
  02:19 UTC".

Then the next step is planned at armed + its delay; after the last step, with `repeat every R`, the last target again
at the previous due + R. A repeat that came due while Herald was down fires once, then keeps its rhythm from now (no
burst of missed repeats); steps that came due while down each fire once, in order, after the start grace.
The compiler bounds R to at least a minute (dsl.checks_rule.MIN_REPEAT_S).

An unacknowledgement (the Unacknowledge button, `herald alerts unack`) resumes a policy an acknowledgement stopped,
from the step it stopped at (`resume`): that step comes due again as long after the unacknowledgement as it came
after the step before it in the policy (the first step: its own delay; a later step: its delay minus the one
before; a repeat: the repeat interval), and the steps after it keep their spacing from there, so "repeat every 30m
until acknowledged" applies again. The person who unacknowledges gets that gap to take the alert again before the
next people are called. A policy whose step had not come due yet when the alert was acknowledged never stopped:
its timer fires as planned, and now notifies. A policy whose rule or clause is gone since is not resumed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dsl import EventGraph
from dsl.plan import EscalateAction
from dsl.values import format_duration
from engine.core.events import AlertData
from engine.core.timers import Timer, key_parts, state_key
from engine.delivery.message import LinkButton
from engine.delivery.outlets import Notification
from engine.runs import actions
from engine.runs.alerts import ALERT_BUTTONS
from engine.runs.links import alert_links
from engine.runs.run import RuleRun, Services, summarize
from engine.runs.stateful import ESCALATE, ClausePart, Stateful, acknowledged_by, latest_status, manager


@actions.handles(EscalateAction)
async def escalate(action: EscalateAction, run: RuleRun, services: Services) -> actions.ActionOutcome:
    data = run.event.data
    if not isinstance(data, AlertData):  # the compiler allows escalate on alert rules only
        return actions.ActionOutcome("escalate needs an alert")
    if data.status == "resolved":
        return actions.ActionOutcome("resolved: nothing to escalate")
    state = manager(services)
    armed = state.now()
    first = action.steps[0]
    due = armed + timedelta(seconds=first.after_s)
    key = state_key(ESCALATE, run.rule.state_key, action.fingerprint, data.fingerprint)
    payload = {"rule": run.rule.name, "alert": data.fingerprint, "event": run.event.id, "text": summarize(run.event),
               "severity": data.severity, "steps": [[s.target, s.after_s] for s in action.steps],
               "repeat": action.repeat_s, "step": 0, "armed": armed.timestamp(),
               "links": [[link.label, link.url] for link in alert_links(data)]}
    # A repeated firing notification keeps the escalation it already started; it must not push it later.
    if not await state.timers.schedule(ESCALATE, due, key, payload, replace=False):
        return actions.ActionOutcome("escalation already under way")
    later = "".join(f", to {s.target} at {(armed + timedelta(seconds=s.after_s)).isoformat(timespec='seconds')}"
                    for s in action.steps[1:])
    again = f", then every {format_duration(action.repeat_s)}" if action.repeat_s is not None else ""
    return actions.ActionOutcome(f"escalates to {first.target} at {due.isoformat(timespec='seconds')}{later}{again} "
                                 "unless acknowledged")


def _steps(p: dict[str, Any]) -> list[tuple[str, float]]:
    """The policy's steps; a timer planned before policies existed holds one step as `target` and `after`."""
    if "steps" in p:
        return [(str(target), float(after)) for target, after in p["steps"]]
    return [(str(p["target"]), float(p["after"]))]


async def escalate_due(state: Stateful, timer: Timer) -> None:
    p, services = timer.payload, state.services
    steps, index, repeat = _steps(p), int(p.get("step", 0)), p.get("repeat")
    armed = datetime.fromtimestamp(p["armed"], UTC) if "armed" in p else timer.due - timedelta(seconds=steps[0][1])
    target, after = steps[min(index, len(steps) - 1)]
    fingerprint = p["alert"]
    which: dict[str, object] = {"step": min(index, len(steps) - 1) + 1}
    if index >= len(steps):
        which["repeat"] = index - len(steps) + 1
    audit = {"rule": p["rule"], "alert": fingerprint, "target": target, **which}
    by = await services.db.call(acknowledged_by, fingerprint)
    if by is not None:
        await services.audit_publish("escalation.skipped", "system", **audit, reason=f"acknowledged by {by}")
        if await services.db.call(latest_status, fingerprint) != "resolved":  # kept for an unacknowledgement
            await services.alerts.pause_escalation(timer.key, fingerprint, {
                **p, "steps": [list(step) for step in steps], "step": index, "armed": armed.timestamp()})
        return
    if await services.db.call(latest_status, fingerprint) == "resolved":
        await services.audit_publish("escalation.skipped", "system", **audit, reason="resolved")
        return
    # The next step is planned before this one notifies: a stop in between loses at most this message, never the
    # rest of the policy (a timer is taken from its table before its handler runs).
    await _plan_next(state, timer, steps, index, repeat, armed)
    until = await services.alerts.muted_until(fingerprint)
    if until is not None:  # a mute quiets the alert everywhere, this step of its escalation too
        await services.audit_publish("escalation.skipped", "system", **audit,
                                     reason=f"muted until {until.isoformat(timespec='minutes')}")
        return
    await _notify(state, timer, target, elapsed=after if index < len(steps) else
                  (timer.due - armed).total_seconds(), audit=audit)


async def _notify(state: Stateful, timer: Timer, target: str, *, elapsed: float, audit: dict[str, Any]) -> None:
    p, services = timer.payload, state.services
    fingerprint = p["alert"]
    audience = actions.audience_for(target, services)
    if audience is None:
        await services.audit_publish("escalation.failed", "system", **audit, reason="target is not configured")
        return
    # The alert's record first, so the messages already out say who it went to; the new one then follows too.
    await services.alerts.escalated(fingerprint, target, state.now())
    status = await services.alerts.status(fingerprint)
    services.board.escalated(fingerprint, status.escalations)  # the TUI's Alerts tab and `herald alerts` show it
    await services.delivery.follow(fingerprint, status)
    buttons = await services.alerts.make_buttons(event_id=p["event"], rule=p["rule"], fingerprint=fingerprint,
                                                 specs=tuple((a, g) for _, a, g in ALERT_BUTTONS))
    late = round(elapsed / 60) * 60 if elapsed >= 60 else round(elapsed)  # a repeat says "after 1h15m", to the minute
    text = f"Escalated: not acknowledged after {format_duration(late)}: {p['text']}"
    reach = await services.delivery.notify(audience, Notification(
        event_id=p["event"], rule=p["rule"], text=text, buttons=buttons, severity=p.get("severity"),
        alert=fingerprint, links=_links(p.get("links"))), key=f"escalate/{timer.key}/{timer.due.timestamp():.0f}")
    await services.audit_publish("escalation.sent", "system", **audit, reach=str(reach))


def _links(stored: object) -> tuple[LinkButton, ...]:
    """An escalation's links, as its timer kept them ([label, url] pairs; none in timers from before links)."""
    if not isinstance(stored, list):
        return ()
    return tuple(LinkButton(label=label, url=url) for label, url in stored)


async def _plan_next(state: Stateful, timer: Timer, steps: list[tuple[str, float]], index: int,
                     repeat: float | None, armed: datetime) -> None:
    following = index + 1
    if following < len(steps):
        due = armed + timedelta(seconds=steps[following][1])
    elif repeat:
        due = timer.due + timedelta(seconds=repeat)
        now = state.now()
        if due <= now:  # repeats missed while Herald was down are not made up in a burst
            due = now + timedelta(seconds=repeat)
    else:
        return
    payload = {**timer.payload, "steps": [list(step) for step in steps], "step": following,
               "armed": armed.timestamp()}
    # replace=False: a firing that armed a new escalation in the meantime keeps its own
    await state.timers.schedule(ESCALATE, due, timer.key, payload, replace=False)


async def resume(fingerprint: str, services: Services) -> str:
    """Resume the escalation policies an acknowledgement stopped for this alert (see the module's docstring);
    say when each comes due next ("" when there are none)."""
    if services.stateful is None:
        return ""
    state = manager(services)
    paused = await services.alerts.take_paused(fingerprint)
    if not paused or await services.db.call(latest_status, fingerprint) == "resolved":
        return ""
    now, said = state.now(), []
    for key, p in paused:
        if not _clause_exists(state, key):
            await services.audit_publish("escalation.skipped", "system", rule=p["rule"], alert=fingerprint,
                                         reason="not resumed: the rule or its escalate clause changed since")
            continue
        steps, index = _steps(p), int(p.get("step", 0))
        if index < len(steps):  # a step: its gap in the policy; the steps after it keep their spacing
            gap = steps[index][1] - (steps[index - 1][1] if index > 0 else 0.0)
            armed = now + timedelta(seconds=gap - steps[index][1])
        else:  # a repeat: one interval from now
            gap = float(p.get("repeat") or 0.0)
            armed = datetime.fromtimestamp(p["armed"], UTC) if "armed" in p else now
        due = now + timedelta(seconds=gap)
        payload = {**p, "step": index, "armed": armed.timestamp()}
        # replace=False: an escalation a later firing armed meanwhile goes on as it is
        if await state.timers.schedule(ESCALATE, due, key, payload, replace=False):
            target = steps[min(index, len(steps) - 1)][0]
            await services.audit_publish("escalation.resumed", "system", rule=p["rule"], alert=fingerprint,
                                         target=target, step=min(index, len(steps) - 1) + 1,
                                         due=due.isoformat(timespec="seconds"))
            said.append(f"to {target} at {due.isoformat(timespec='seconds')}")
    return ", ".join(said)


def _clause_exists(state: Stateful, key: str) -> bool:
    """Whether the rule and escalate clause a timer key names still run (a reload may have removed them)."""
    _, rule_key, clause, *_ = key_parts(key)
    rule = state.current_rule(rule_key)
    return rule is not None and any(getattr(action, "fingerprint", None) == clause for action in rule.actions)


async def _on_swap(state: Stateful, graph: EventGraph) -> None:
    """Nothing to do: Stateful.on_graph_swapped drops the timers of escalate clauses that are gone or changed."""


PART = ClausePart(timers={ESCALATE: escalate_due}, on_swap=_on_swap)
