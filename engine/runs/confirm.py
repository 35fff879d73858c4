"""`require confirmation [by another ROLE] within D` (issue 6): a second, deliberate press before a run goes on.

The run parks in CONFIRM and a confirmation record is persisted: the run, its rule (name and fingerprint), the stage
it stopped at, the event and the run's fields, who asked, who may confirm, and the expiry. Each person asked gets a
Confirm button of their own (a signed button, engine.alerts) whose argument is the confirmation's id: the requester
for a plain confirmation; every other person holding ROLE for `by another ROLE` (the requester is told who was
asked). Separate buttons mean a stray press by someone else cannot use up the right person's button.

A press is decided in one transaction on the record: the right person within D confirms it (audited
`confirmation.confirmed`) and the run resumes at the next stage (`Runtime.continue_run`), rebuilt from the record
and the journal when Herald restarted in between; a second press, a press by the wrong person (the requester when
another person is required, someone without the role) or a press after expiry is refused with a reply saying why
and audited `confirmation.refused` with the reason. The expiry timer tells the requester and audits
`confirmation.expired`. A pending confirmation of a rule that changed in a reload is cancelled and the people asked
are told.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta

from dsl import EventGraph
from dsl.plan import ConfirmStage
from dsl.values import format_duration
from engine.core.events import ButtonData, CommandData, Event, ReplyTo
from engine.core.ids import derived_id
from engine.core.timers import Timer, state_key
from engine.delivery.outlets import Audience, Notification, Text
from engine.runs import stages
from engine.runs.run import RuleRun, RunState, Services, summarize, who
from engine.runs.stateful import ClausePart, Stateful, json_fields, manager

SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmations (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    rule_fingerprint TEXT NOT NULL,
    clause TEXT NOT NULL,
    stage INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    fields TEXT NOT NULL,
    requester TEXT,
    role TEXT,
    asked TEXT NOT NULL,         -- JSON list of principals
    reply_to TEXT,               -- JSON ReplyTo of the request
    what TEXT NOT NULL,          -- the request as shown to people
    expires REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending, confirmed, expired, cancelled
    decided_by TEXT,
    decided_at REAL
);
CREATE INDEX IF NOT EXISTS confirmations_pending ON confirmations(status) WHERE status = 'pending';
"""

EXPIRE = "confirm.expire"
BUTTON = "confirm"


def _what(run: RuleRun) -> str:
    data = run.event.data
    return data.safe_text if isinstance(data, CommandData) else f"rule {run.rule.name} ({summarize(run.event)})"


@stages.handles(ConfirmStage)
async def require_confirmation(stage: ConfirmStage, run: RuleRun, services: Services,
                               index: int) -> stages.StageOutcome:
    state = manager(services)
    requester = run.event.actor.principal if run.event.actor else None
    if stage.role is None:
        asked = [requester] if requester is not None else []
    else:
        asked = sorted(p for p in services.config.principals
                       if p != requester and stage.role in services.directory.roles_of(p))
    if not asked:
        nobody = "nobody linked to a person asked for it" if stage.role is None else \
            f"nobody else holds role {stage.role}"
        return stages.StageOutcome(False, f"cannot ask for a confirmation: {nobody}")
    # Derived from the run (whose id is derived from the event): a replay after a crash finds the same request.
    confirmation = derived_id(run.event.time, "confirmation", run.run_id, stage.fingerprint)
    expires = state.now() + timedelta(seconds=stage.within_s)
    what = _what(run)
    row = (confirmation, run.run_id, run.rule.name, run.rule.fingerprint, stage.fingerprint, index, run.event.id,
           json_fields(run.fields), requester, stage.role, json.dumps(asked),
           run.event.reply_to.model_dump_json() if run.event.reply_to else None, what, expires.timestamp())
    window = format_duration(stage.within_s)
    whom = "you" if stage.role is None else f"another {stage.role} ({', '.join(asked)})"
    waiting = stages.StageOutcome(False, f"waiting for {whom} to confirm within {window}", state=RunState.CONFIRM,
                                  parked=True)
    fresh = await services.db.write(lambda conn: conn.execute(
        "INSERT OR IGNORE INTO confirmations (id, run_id, rule, rule_fingerprint, clause, stage, event_id, fields, "
        "requester, role, asked, reply_to, what, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row).rowcount == 1)
    if not fresh:
        return waiting  # asked before a restart; the buttons are out and the expiry timer is set
    await state.timers.schedule(EXPIRE, expires, state_key(EXPIRE, confirmation), {"id": confirmation})
    for person in asked:
        [button] = await services.alerts.make_buttons(event_id=run.event.id, rule=run.rule.name, fingerprint=None,
                                                      specs=((BUTTON, confirmation),))
        text = (f"Confirm within {window}: {what}" if person == requester else
                f"{requester or who(run.event)} asks for {what}; confirm within {window} (needs another {stage.role})")
        await services.delivery.notify(Audience(f"@{person}", members=(person,)),
                                       Notification(event_id=run.event.id, rule=run.rule.name, text=text,
                                                    buttons=(replace(button, label="Confirm"),)),
                                       key=f"confirm/{confirmation}/{person}")
    await services.audit_publish("confirmation.requested", who(run.event), rule=run.rule.name, event=run.event.id,
                                 confirmation=confirmation, asked=asked, role=stage.role, within_s=stage.within_s)
    return waiting


def _decide(conn: sqlite3.Connection, confirmation: str, presser: str | None, roles: frozenset[str],
            now: float) -> tuple[sqlite3.Row | None, str | None]:
    """(record, refusal): the refusal is None when this press confirms (and the record is then marked so)."""
    row = conn.execute("SELECT * FROM confirmations WHERE id = ?", (confirmation,)).fetchone()
    refusal = _refusal(row, presser, roles, now)
    if refusal is None:
        conn.execute("UPDATE confirmations SET status = 'confirmed', decided_by = ?, decided_at = ? WHERE id = ?",
                     (presser, now, confirmation))
    return row, refusal


async def press_refusal(services: Services, confirmation: str, presser: str | None, now: float) -> str | None:
    """Why this person may not press this Confirm button, checked before the button is used up (so a bystander
    cannot burn the confirmation meant for someone else), or None."""
    row = await services.db.call(lambda conn: conn.execute(
        "SELECT * FROM confirmations WHERE id = ?", (confirmation,)).fetchone())
    return _refusal(row, presser, services.directory.roles_of(presser), now)


def _refusal(row: sqlite3.Row | None, presser: str | None, roles: frozenset[str], now: float) -> str | None:
    if row is None:
        return "there is no such request"
    status = row["status"]
    if status == "confirmed":
        return f"already confirmed by {row['decided_by']}"
    if status == "cancelled":
        return "the request was cancelled because its rule changed"
    if status == "expired" or row["expires"] <= now:
        return "the confirmation window has passed"
    if presser is None:
        return "this account is not linked to a person"
    if row["role"] is None and presser != row["requester"]:
        return f"only {row['requester']}, who asked, can confirm it"
    if row["role"] is not None:
        if presser == row["requester"]:
            return f"it needs another {row['role']}, not the person who asked"
        if row["role"] not in roles:
            return f"confirming needs role {row['role']}, which {presser} does not have"
    return None


async def pressed(event: Event, data: ButtonData, services: Services) -> None:
    """A Confirm button was pressed (engine.builtins routes it here)."""
    state = manager(services)
    presser = event.actor.principal if event.actor else None
    roles = services.directory.roles_of(presser)
    row, refusal = await services.db.write(_decide, data.arg or "", presser, roles, state.now().timestamp())
    if refusal is not None:
        await services.audit_publish("confirmation.refused", who(event), confirmation=data.arg, reason=refusal,
                                     rule=row["rule"] if row else None)
        await services.delivery.reply(event.reply_to, Text(f"Confirmation refused: {refusal}."))
        return
    assert row is not None
    await state.timers.cancel(state_key(EXPIRE, row["id"]))
    await services.audit_publish("confirmation.confirmed", who(event), confirmation=row["id"], rule=row["rule"],
                                 event=row["event_id"], requester=row["requester"])
    await services.delivery.reply(event.reply_to, Text(f"Confirmed: {row['what']}."))
    if presser != row["requester"]:
        await _tell_requester(services, row, f"{presser} confirmed {row['what']}.")
    run = await _rebuild(state, row)
    if isinstance(run, str):
        await _tell_requester(services, row, f"{row['what']} was confirmed but cannot run: {run}.")
        await state.trace(row["run_id"], row["event_id"], row["rule"], RunState.SKIPPED, run)
        return
    await state.runtime.continue_run(run, first_stage=row["stage"] + 1)


async def _rebuild(state: Stateful, row: sqlite3.Row) -> RuleRun | str:
    """The parked run, from the record: the rule as it is now (it must be the same rule), the journalled event."""
    rule = state.current_rule(row["rule"])
    if rule is None or rule.fingerprint != row["rule_fingerprint"]:
        return "its rule was changed or removed since"
    event = await state.load_event(row["event_id"])
    if event is None:
        return "its event is no longer in the journal"
    return RuleRun(row["run_id"], rule, event, json.loads(row["fields"]))


async def _tell_requester(services: Services, row: sqlite3.Row, text: str) -> None:
    """Answer in the request's conversation; if it is gone (a restart), reach the person's sessions."""
    reply_to = ReplyTo.model_validate_json(row["reply_to"]) if row["reply_to"] else None
    if await services.delivery.reply(reply_to, Text(text)):
        return
    if row["requester"] is not None:
        await services.delivery.notify(Audience(f"@{row['requester']}", members=(row["requester"],)), Text(text))


async def expired(state: Stateful, timer: Timer) -> None:
    services = state.services

    def _expire(conn: sqlite3.Connection) -> sqlite3.Row | None:
        row = conn.execute("SELECT * FROM confirmations WHERE id = ? AND status = 'pending'",
                           (timer.payload["id"],)).fetchone()
        if row is not None:
            conn.execute("UPDATE confirmations SET status = 'expired', decided_at = ? WHERE id = ?",
                         (state.now().timestamp(), row["id"]))
        return row

    row = await services.db.write(_expire)
    if row is None:
        return
    asked = json.loads(row["asked"])
    await services.audit_publish("confirmation.expired", "system", confirmation=row["id"], rule=row["rule"],
                                 event=row["event_id"], requester=row["requester"], asked=asked)
    await _tell_requester(services, row, f"Not run: nobody confirmed {row['what']} in time; the request expired.")
    await state.trace(row["run_id"], row["event_id"], row["rule"], RunState.SKIPPED, "confirmation expired")


async def cancel_changed(state: Stateful, graph: EventGraph) -> None:
    """Cancel pending confirmations whose rule is gone or changed, telling the people asked and the requester."""
    current = {rule.name: rule.fingerprint for rule in graph.rules}
    services = state.services

    def _cancel(conn: sqlite3.Connection) -> list[sqlite3.Row]:
        rows = [row for row in conn.execute("SELECT * FROM confirmations WHERE status = 'pending'").fetchall()
                if current.get(row["rule"]) != row["rule_fingerprint"]]
        conn.executemany("UPDATE confirmations SET status = 'cancelled' WHERE id = ?", [(r["id"],) for r in rows])
        return rows

    for row in await services.db.write(_cancel):
        await state.timers.cancel(state_key(EXPIRE, row["id"]))
        text = f"The confirmation for {row['what']} was cancelled: rule {row['rule']} changed."
        people = set(json.loads(row["asked"])) - {row["requester"]}
        if people:
            await services.delivery.notify(Audience("confirmation", members=tuple(sorted(people))), Text(text))
        await _tell_requester(services, row, text)
        await services.audit_publish("confirmation.cancelled", "system", confirmation=row["id"], rule=row["rule"],
                                     reason="rule changed")
        await state.trace(row["run_id"], row["event_id"], row["rule"], RunState.SKIPPED,
                          "confirmation cancelled: the rule changed")


PART = ClausePart(timers={EXPIRE: expired}, on_swap=cancel_changed)
