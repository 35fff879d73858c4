"""Herald's silences by label matchers: `silence alert where LABEL = VALUE [and ...] for D` (issue 19).

Like an Alertmanager silence, one covers every alert whose labels equal all its matchers (a missing label is the
empty string, and an empty value is refused when the rule runs, so a field that is not set never silences more
than meant), the ones firing when it is made and the ones arriving later, until it ends. Each alert it covers is
muted exactly like a Mute (engine.runs.alerts: notifications and escalation steps stop), with `muted_in` HERALD so
its messages say "🔕 Silenced by rule quiet until 13:00 UTC" (or "by alice" when a person's command made it).

A silence is a row of `herald_silences` (durable: it covers alerts arriving after a restart) and a timer on the
engine's clock at its end, which ends it: audited `silence.expired`, and the alerts it muted are heard again. Made,
it is audited `silence.created`; with `[alerts] alertmanager_url`, it is also made in Alertmanager (API v2, one
equality matcher per label, ending at the same time), whose id is kept so engine.runs.silence_sync takes it as
Herald's own and, when it is expired in Alertmanager before its time, ends Herald's too (`end`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from dsl import EventGraph, render_template
from dsl.plan import SilenceWhereAction
from dsl.values import duration_seconds, format_duration, is_duration
from engine.core.events import AlertData, Event
from engine.core.ids import new_id
from engine.core.store import Database
from engine.core.timers import Timer
from engine.runs import actions
from engine.runs.run import RuleRun, Services
from engine.runs.stateful import ClausePart, Stateful, manager

SCHEMA = """
CREATE TABLE IF NOT EXISTS herald_silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    created_by TEXT NOT NULL,
    rule TEXT NOT NULL,
    created_at TEXT NOT NULL,
    until TEXT NOT NULL,
    upstream_id TEXT,
    upstream_until TEXT,
    ended_at TEXT
);
CREATE TABLE IF NOT EXISTS herald_silenced (
    silence_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (silence_id, fingerprint)
);
"""
HERALD = "Herald"  # the alert state's `muted_in` for a mute that comes from one of these silences
END = "silence.where.end"
log = logging.getLogger("herald.silences")


@dataclass(frozen=True)
class HeraldSilence:
    id: str
    matchers: tuple[tuple[str, str], ...]
    created_by: str  # the person whose command made it, or the rule's name ("rule quiet")
    rule: str
    created_at: datetime
    until: datetime  # on the engine's clock
    upstream_id: str | None
    upstream_until: datetime | None = None  # the Alertmanager twin's end (wall clock)

    def covers(self, labels: dict[str, str]) -> bool:
        return bool(self.matchers) and all(labels.get(name, "") == value for name, value in self.matchers)

    def matcher_text(self) -> str:
        return ", ".join(f'{name}="{value}"' for name, value in self.matchers)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": [{"name": n, "value": v} for n, v in self.matchers],
                "created_by": self.created_by, "rule": self.rule, "created_at": self.created_at.isoformat(),
                "until": self.until.isoformat(), "alertmanager_id": self.upstream_id}


def _silence(row: sqlite3.Row) -> HeraldSilence:
    return HeraldSilence(row["id"], tuple((str(n), str(v)) for n, v in json.loads(row["matchers"])),
                         row["created_by"], row["rule"], datetime.fromisoformat(row["created_at"]),
                         datetime.fromisoformat(row["until"]), row["upstream_id"],
                         datetime.fromisoformat(row["upstream_until"]) if row["upstream_until"] else None)


def active(conn: sqlite3.Connection) -> list[HeraldSilence]:
    """The silences not ended yet (their end timer ends them on the engine's clock), oldest first."""
    return [_silence(row) for row in conn.execute(
        "SELECT * FROM herald_silences WHERE ended_at IS NULL ORDER BY created_at, id")]


class _Active:
    """The active silences of one engine, read once and re-read after this module (their only writer) changed
    them: every firing alert asks, and a database trip per alert cost 7% of end-to-end throughput."""

    def __init__(self) -> None:
        self.silences: list[HeraldSilence] | None = None
        self.generation = 0

    async def get(self, db: Database) -> list[HeraldSilence]:
        if self.silences is None:
            generation = self.generation
            silences = await db.call(active)
            if generation != self.generation:  # changed meanwhile: what was read may miss it
                return silences
            self.silences = silences
        return self.silences

    def changed(self) -> None:
        self.silences = None
        self.generation += 1


_ACTIVE: weakref.WeakKeyDictionary[Database, _Active] = weakref.WeakKeyDictionary()


def _active(db: Database) -> _Active:
    return _ACTIVE.setdefault(db, _Active())


# -- making one ------------------------------------------------------------------------------------------------


@actions.handles(SilenceWhereAction)
async def silence_where(action: SilenceWhereAction, run: RuleRun, services: Services) -> actions.ActionOutcome:
    matchers = tuple((label, render_template(value, run.fields)) for label, value in action.matchers)
    empty = [label for label, value in matchers if value == ""]
    if empty:  # in Alertmanager an empty value matches alerts without the label: far more than meant
        return actions.ActionOutcome(f"nothing silenced: the value for {', '.join(empty)} is empty")
    seconds = action.duration_s
    if seconds is None:
        text = str(run.fields.get(action.duration_field or "") or "")
        if not is_duration(text) or duration_seconds(text) <= 0:
            return actions.ActionOutcome(f"nothing silenced: {text!r} is not a duration such as 30m or 1h")
        seconds = duration_seconds(text)
    state = manager(services)
    now = state.now()
    by = run.event.actor.principal if run.event.actor is not None and run.event.actor.principal else None
    silence = HeraldSilence(new_id(), matchers, by or f"rule {run.rule.name}", run.rule.name, now,
                            now + timedelta(seconds=seconds), None)
    await services.db.write(lambda conn: conn.execute(
        "INSERT INTO herald_silences (id, matchers, created_by, rule, created_at, until) VALUES (?, ?, ?, ?, ?, ?)",
        (silence.id, json.dumps(matchers), silence.created_by, silence.rule, now.isoformat(),
         silence.until.isoformat())))
    _active(services.db).changed()
    await state.timers.schedule(END, silence.until, f"{END}:{silence.id}", {"id": silence.id})
    await services.audit_publish("silence.created", by or "system", rule=run.rule.name, silence=silence.id,
                                 matchers=silence.matcher_text(), until=silence.until.isoformat(timespec="seconds"))
    silence = await _mirror(services, silence, by or "system")
    muted = 0
    for alert in services.board.firing_alerts():
        if silence.covers(alert.labels):
            await _mute(state, silence, alert.fingerprint)
            muted += 1
    return actions.ActionOutcome(f"silenced alerts where {silence.matcher_text()} for {format_duration(seconds)} "
                                 f"({muted} firing now)")


async def _mirror(services: Services, silence: HeraldSilence, actor: str) -> HeraldSilence:
    """Make the silence in Alertmanager too, when one is configured; Herald's holds whatever it answers."""
    if services.upstream is None or services.config.alerts.alertmanager_url is None:  # (read at each use)
        return silence
    ends = _real(silence.until, silence.created_at)
    body = {"matchers": [{"name": n, "value": v, "isRegex": False, "isEqual": True} for n, v in silence.matchers],
            "startsAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "endsAt": ends.isoformat(timespec="milliseconds"),
            "createdBy": silence.created_by, "comment": f"Silenced by Herald rule {silence.rule}"}
    try:
        answer = await services.upstream.call("POST", "/api/v2/silences", body)
        upstream_id = str(answer["silenceID"])
    except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("could not make the Alertmanager silence of Herald silence %s: %s", silence.id, reason)
        await services.audit_publish("silence.upstream_failed", "system", silence=silence.id, step="create",
                                     reason=reason)
        return silence
    await services.db.write(lambda conn: conn.execute(
        "UPDATE herald_silences SET upstream_id = ?, upstream_until = ? WHERE id = ?",
        (upstream_id, ends.isoformat(), silence.id)))
    await services.audit_publish("silence.upstream", actor, silence=silence.id, upstream=upstream_id,
                                 until=silence.until.isoformat(timespec="seconds"))
    return dataclasses.replace(silence, upstream_id=upstream_id, upstream_until=ends)


def _real(until: datetime, now: datetime) -> datetime:
    """The end on the wall clock: the alert state and Alertmanager keep real time, the engine's clock may be a
    test's; the silence's own end timer (engine clock) is what ends it."""
    return datetime.now(UTC) + (until - now)


async def _mute(state: Stateful, silence: HeraldSilence, fingerprint: str) -> None:
    services = state.services
    until = await services.alerts.mute_until(fingerprint, silence.created_by, _real(silence.until, state.now()),
                                             muted_in=HERALD)
    await services.db.write(lambda conn: conn.execute(
        "INSERT OR IGNORE INTO herald_silenced (silence_id, fingerprint) VALUES (?, ?)", (silence.id, fingerprint)))
    services.board.muted(fingerprint, until)
    await services.delivery.follow(fingerprint, await services.alerts.status(fingerprint))


# -- alerts arriving, and the end ------------------------------------------------------------------------------


async def alert_arrived(state: Stateful, event: Event, data: AlertData) -> bool:
    """A firing alert that an active silence covers is muted before any rule sees it (so no notification)."""
    if data.status != "firing":
        return False
    silences = await _active(state.services.db).get(state.services.db)
    covering = [s for s in silences if s.covers(data.labels) and s.until > state.now()]
    if covering:
        await _mute(state, max(covering, key=lambda s: s.until), data.fingerprint)
    return False  # muted or not, the rules still see it (their notifications say "muted until")


async def ended(state: Stateful, timer: Timer) -> None:
    await end(state.services, timer.payload["id"], reason="its time came")


async def end(services: Services, silence_id: str, *, reason: str) -> None:
    """End a silence (its time came, or it was expired in Alertmanager): the alerts it muted are heard again."""
    def _close(conn: sqlite3.Connection) -> list[str]:
        closed = conn.execute("UPDATE herald_silences SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                              (datetime.now(UTC).isoformat(), silence_id)).rowcount
        if not closed:
            return []
        fingerprints = [r[0] for r in conn.execute(
            "SELECT fingerprint FROM herald_silenced WHERE silence_id = ?", (silence_id,))]
        conn.execute("DELETE FROM herald_silenced WHERE silence_id = ?", (silence_id,))
        return fingerprints

    fingerprints = await services.db.write(_close)
    _active(services.db).changed()
    for fingerprint in fingerprints:
        status = await services.alerts.status(fingerprint)
        if status.muted_in == HERALD:  # not a later Mute or an Alertmanager silence that replaced it
            await services.alerts.unmute(fingerprint)
            services.board.muted(fingerprint, None)
            await services.delivery.follow(fingerprint, await services.alerts.status(fingerprint), reshow=True)
    await services.audit_publish("silence.expired", "system", silence=silence_id, reason=reason,
                                 alerts=len(fingerprints))


async def _replan(state: Stateful, graph: EventGraph) -> None:
    """Silences outlive the rules that made them (as Alertmanager's do): a reload leaves them as they are."""


PART = ClausePart(timers={END: ended}, on_swap=_replan, on_alert=alert_arrived)
