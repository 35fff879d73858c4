"""Stateful clauses at run time (DESIGN §3, issue 8): dedupe, rate limits, groups, escalations and silences.

State lives outside the compiled graph, keyed by (rule name, clause fingerprint, value), so a reload that leaves a
clause unchanged keeps its windows, counters and timers; `on_graph_swapped` drops the state of clauses that are
gone. Everything is persisted in SQLite (tables below, timers in engine.timers), so it survives a restart.
Confirmations live in engine.runs.confirm, schedules in engine.runs.schedules (each a `ClausePart` the engine hands
in); this module owns the per-engine `Stateful` object that ties them to the runtime, the timers and the clock.

- dedupe by F for D: an event passes when no event with the same F passed within the last D; repeats are SKIPPED.
- at most N per D [per F]: a sliding window of the runs that passed; a refused run is SKIPPED with
  "rate limited, try again in Xs".
- group by F within D: the first event of a group opens a window of D (Alertmanager's group_wait); later ones join
  it; every event's run ends SKIPPED ("grouped"), and when the window closes the rule runs once, as the batch's
  own run, with the first event's fields plus `group.count` and `group.key`.
- escalate to T after D[, ...][, repeat every R] unless/until acknowledged: a timer per (rule, clause, alert),
  walked step by step by engine.runs.escalation (a ClausePart); this module keeps its kind's timers in step with
  the graph.
- silence alert by F for D: the alert whose fingerprint is F's value is muted (engine.alerts: persisted, checked
  on every notification, gone when the alert resolves); a timer audits the silence's end.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dsl import EventGraph
from dsl.graph import CompiledRule
from dsl.plan import DedupeStage, GroupStage, RateLimitStage, SilenceAction
from dsl.values import duration_seconds, format_duration, human_duration, is_duration
from engine.client.snapshots import RunView
from engine.core.events import AlertData, Event
from engine.core.ids import new_id
from engine.core.timers import Timer, Timers, key_parts, key_prefix, state_key
from engine.runs import actions, stages
from engine.runs.run import RuleRun, RunHost, RunState, Services, who
from engine.runs.stages import PROCEED, StageOutcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe_state (
    rule TEXT NOT NULL, clause TEXT NOT NULL, value TEXT NOT NULL, until REAL NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (rule, clause, value)
);
CREATE TABLE IF NOT EXISTS rate_hits (
    rule TEXT NOT NULL, clause TEXT NOT NULL, value TEXT NOT NULL, time REAL NOT NULL, run_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_hits_key ON rate_hits(rule, clause, value, time);
CREATE TABLE IF NOT EXISTS group_state (
    rule TEXT NOT NULL, clause TEXT NOT NULL, value TEXT NOT NULL,
    batch TEXT NOT NULL, event_id TEXT NOT NULL, fields TEXT NOT NULL, stage INTEGER NOT NULL,
    count INTEGER NOT NULL, due REAL NOT NULL,
    PRIMARY KEY (rule, clause, value)
);
"""

ESCALATE, GROUP, SILENCE_END, SWEEP = "escalate", "group", "silence.end", "stateful.sweep"
SWEEP_EVERY_S = 600.0


def manager(services: Services) -> Stateful:
    """The `Stateful` of the engine these services belong to (stage and action handlers get only services)."""
    if not isinstance(services.stateful, Stateful):
        raise RuntimeError("stateful clauses are not attached to this engine")
    return services.stateful


def value_of(run: RuleRun, field: str) -> str | None:
    value = run.fields.get(field)
    return None if value is None else str(value)


def json_fields(fields: dict[str, object]) -> str:
    return json.dumps({k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
                       for k, v in fields.items()}, separators=(",", ":"))


@dataclass(frozen=True)
class ClausePart:
    """A stateful clause kept in a module of its own (confirmation, schedules): its timer kinds, and what it does
    after a graph swap. The engine hands the parts to `Stateful`, so this module never imports them."""

    timers: Mapping[str, Callable[[Stateful, Timer], Awaitable[None]]]
    on_swap: Callable[[Stateful, EventGraph], Awaitable[None]]
    # Called for every alert the runtime handles, before rules match it (the dead man's switch re-arms here);
    # True: the part took the alert as meant for it, so it is not "unmatched" when no rule matches it.
    on_alert: Callable[[Stateful, Event, AlertData], Awaitable[bool]] | None = None


class Stateful:
    """Per-engine state for the stateful clauses: the runtime to resume runs on, the timers, the clock."""

    def __init__(self, *, runtime: RunHost, timers: Timers, parts: Sequence[ClausePart] = ()) -> None:
        self.runtime = runtime
        self.timers = timers
        self._parts = tuple(parts)

    @property
    def services(self) -> Services:
        return self.runtime.services  # the current ones: a config reload may replace them

    def now(self) -> datetime:
        return self.timers.clock.now()

    def attach(self) -> Callable[[], None]:
        """Register this engine's handlers and timer kinds; the returned function detaches them."""
        self.services.stateful = self
        detaches = [self.timers.on(GROUP, self._group_due),
                    self.timers.on(SILENCE_END, self._silence_end), self.timers.on(SWEEP, self._sweep)]
        for part in self._parts:
            detaches += [self.timers.on(kind, functools.partial(handler, self))
                         for kind, handler in part.timers.items()]

        def detach() -> None:
            self.services.stateful = None
            for undo in detaches:
                undo()

        return detach

    async def on_graph_swapped(self, old: EventGraph | None, new: EventGraph) -> None:
        """Re-plan after a graph swap (and at start, with `old` None): keep the timers and state of clauses that
        are unchanged, drop those of clauses that are gone or changed, cancel pending confirmations of changed
        rules (telling the people asked), and plan schedules. Compares against what is persisted, so rules that
        changed while Herald was down are handled the same way."""
        live: set[tuple[str, str]] = set()
        for rule in new.rules:
            for clause in (*rule.stages, *rule.actions):
                fingerprint = getattr(clause, "fingerprint", "")
                if fingerprint:
                    live.add((rule.state_key, fingerprint))
        for timer in await self.timers.pending():
            if timer.kind in (ESCALATE, GROUP, SILENCE_END):
                _, rule_name, clause_fingerprint, *_ = key_parts(timer.key)
                if (rule_name, clause_fingerprint) not in live:
                    await self.timers.cancel(timer.key)
        await self.services.db.write(_drop_state_except, live)
        for part in self._parts:
            await part.on_swap(self, new)
        await self.timers.schedule(SWEEP, self.now() + timedelta(seconds=SWEEP_EVERY_S), SWEEP, {}, replace=False)

    async def alert_arrived(self, event: Event, data: AlertData) -> bool:
        """Show an arriving alert to the parts that watch alerts; whether one of them took it."""
        taken = False
        for part in self._parts:
            if part.on_alert is not None:
                taken = await part.on_alert(self, event, data) or taken
        return taken

    # -- resuming runs -------------------------------------------------------------------------------------------

    def current_rule(self, key: str) -> CompiledRule | None:
        """The running rule with this state key (or name: schedules keep names)."""
        return next((rule for rule in self.runtime.graph.rules if key in (rule.state_key, rule.name)), None)

    async def load_event(self, event_id: str) -> Event | None:
        row = await self.services.db.call(
            lambda conn: conn.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone())
        return None if row is None else Event.model_validate_json(row["body"])

    async def trace(self, run_id: str, event_id: str, rule: str, state: RunState, detail: str) -> None:
        """Record a state of a run this module finishes or starts outside the runtime's own flow."""
        time = self.now().isoformat(timespec="milliseconds")
        row = (run_id, state.value, time, event_id, rule, detail)
        await self.services.db.write(lambda conn: conn.execute("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)", row))
        self.services.bus.publish(RunView(run_id=run_id, event_id=event_id, rule=rule, state=state.value, time=time,
                                          detail=detail))

    # -- timers --------------------------------------------------------------------------------------------------

    async def _group_due(self, timer: Timer) -> None:
        _, rule_name, clause, value = key_parts(timer.key)
        row = await self.services.db.write(_pop_group, rule_name, clause, value)
        if row is None:
            return
        rule, event = self.current_rule(rule_name), await self.load_event(row["event_id"])
        if rule is None or event is None or row["stage"] >= len(rule.stages) \
                or getattr(rule.stages[row["stage"]], "fingerprint", None) != clause:
            await self.services.audit_publish("group.dropped", "system", rule=rule_name, key=value,
                                              count=row["count"], reason="the rule changed")
            return
        fields = {**json.loads(row["fields"]), "group.count": row["count"], "group.key": value}
        run = RuleRun(row["batch"], rule, event, fields)
        await self.services.audit_publish("group.released", "system", rule=rule_name, key=value, count=row["count"],
                                          run=run.run_id)
        await self.trace(run.run_id, event.id, rule_name, RunState.INIT, f"batch of {row['count']} ({value})")
        await self.runtime.continue_run(run, first_stage=row["stage"] + 1)

    async def _silence_end(self, timer: Timer) -> None:
        p = timer.payload
        until = await self.services.alerts.muted_until(p["alert"])
        if until is None:
            await self.services.audit_publish("silence.ended", "system", rule=p["rule"], alert=p["alert"])

    async def _sweep(self, timer: Timer) -> None:
        await self.services.db.write(_sweep_expired, self.now().timestamp())
        await self.timers.schedule(SWEEP, self.now() + timedelta(seconds=SWEEP_EVERY_S), SWEEP, {})


# -- SQL helpers (run on the database thread) ------------------------------------------------------------------


def _drop_state_except(conn: sqlite3.Connection, live: set[tuple[str, str]]) -> None:
    for table in ("dedupe_state", "rate_hits", "group_state"):
        stale = [key for key in conn.execute(f"SELECT DISTINCT rule, clause FROM {table}").fetchall()
                 if (key["rule"], key["clause"]) not in live]
        conn.executemany(f"DELETE FROM {table} WHERE rule = ? AND clause = ?", [tuple(k) for k in stale])


def _sweep_expired(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM dedupe_state WHERE until <= ?", (now,))
    # a rate window is at most a day in practice; hits older than a week cannot matter to any sane clause
    conn.execute("DELETE FROM rate_hits WHERE time < ?", (now - 7 * 86400,))


def acknowledged_by(conn: sqlite3.Connection, fingerprint: str) -> str | None:
    row = conn.execute("SELECT acknowledged_by FROM alert_state WHERE fingerprint = ?", (fingerprint,)).fetchone()
    return None if row is None or row["acknowledged_by"] is None else str(row["acknowledged_by"])


def latest_status(conn: sqlite3.Connection, fingerprint: str) -> str | None:
    row = conn.execute("SELECT json_extract(body, '$.data.status') AS status FROM events WHERE alert = ? "
                       "ORDER BY id DESC LIMIT 1", (fingerprint,)).fetchone()  # by index: journals grow
    return None if row is None else row["status"]


def _pop_group(conn: sqlite3.Connection, rule: str, clause: str, value: str) -> sqlite3.Row | None:
    row = conn.execute("SELECT * FROM group_state WHERE rule = ? AND clause = ? AND value = ?",
                       (rule, clause, value)).fetchone()
    conn.execute("DELETE FROM group_state WHERE rule = ? AND clause = ? AND value = ?", (rule, clause, value))
    return row


# -- stages ----------------------------------------------------------------------------------------------------


@stages.handles(DedupeStage)
async def dedupe(stage: DedupeStage, run: RuleRun, services: Services, index: int) -> StageOutcome:
    value = value_of(run, stage.field)
    if value is None:  # missing is not empty: nothing to compare, so nothing to drop
        return PROCEED
    now = manager(services).now().timestamp()
    key = (run.rule.state_key, stage.fingerprint, value)

    def _check(conn: sqlite3.Connection) -> float | None:
        row = conn.execute("SELECT until, run_id FROM dedupe_state WHERE rule = ? AND clause = ? AND value = ?",
                           key).fetchone()
        if row is not None and row["run_id"] == run.run_id:
            return None  # this very run passed before a restart (run ids are derived): a replay passes again
        if row is not None and row["until"] > now:
            return float(row["until"])
        conn.execute("INSERT OR REPLACE INTO dedupe_state (rule, clause, value, until, run_id) VALUES (?, ?, ?, ?, ?)",
                     (*key, now + stage.for_s, run.run_id))
        return None

    until = await services.db.write(_check)
    if until is None:
        return PROCEED
    return StageOutcome(False, f"duplicate: {stage.field} {value} was seen within the last "
                               f"{format_duration(stage.for_s)} (next one passes in {human_duration(until - now)})")


@stages.handles(RateLimitStage)
async def rate_limit(stage: RateLimitStage, run: RuleRun, services: Services, index: int) -> StageOutcome:
    value = "" if stage.key is None else value_of(run, stage.key)
    if value is None:
        value = ""  # a missing key field counts against the clause's shared bucket, never around it
    now = manager(services).now().timestamp()
    key = (run.rule.state_key, stage.fingerprint, value)

    def _count(conn: sqlite3.Connection) -> float | None:
        if conn.execute("SELECT 1 FROM rate_hits WHERE rule = ? AND clause = ? AND value = ? AND run_id = ?",
                        (*key, run.run_id)).fetchone():
            return None  # counted before a restart: a replay of the same run is not a second run
        conn.execute("DELETE FROM rate_hits WHERE rule = ? AND clause = ? AND value = ? AND time <= ?",
                     (*key, now - stage.per_s))
        hits = [row["time"] for row in conn.execute(
            "SELECT time FROM rate_hits WHERE rule = ? AND clause = ? AND value = ? ORDER BY time", key)]
        if len(hits) >= stage.count:
            return float(hits[len(hits) - stage.count]) + stage.per_s - now
        conn.execute("INSERT INTO rate_hits (rule, clause, value, time, run_id) VALUES (?, ?, ?, ?, ?)",
                     (*key, now, run.run_id))
        return None

    wait = await services.db.write(_count)
    if wait is None:
        return PROCEED
    whose = f" for {value}" if value else ""
    return StageOutcome(False, f"rate limited (at most {stage.count} per {format_duration(stage.per_s)}{whose}), "
                               f"try again in {human_duration(wait)}")


@stages.handles(GroupStage)
async def group(stage: GroupStage, run: RuleRun, services: Services, index: int) -> StageOutcome:
    value = value_of(run, stage.field)
    if value is None:
        return PROCEED  # no group to join: the event runs on its own
    state = manager(services)
    now = state.now()
    due = now + timedelta(seconds=stage.within_s)
    key = (run.rule.state_key, stage.fingerprint, value)

    def _join(conn: sqlite3.Connection) -> tuple[str, int, float]:
        row = conn.execute("SELECT batch, count, due, event_id FROM group_state WHERE rule = ? AND clause = ? "
                           "AND value = ?", key).fetchone()
        if row is not None and row["event_id"] == run.event.id:
            return str(row["batch"]), 1, float(row["due"])  # the first event again (a replay): still the opener
        if row is not None:
            conn.execute("UPDATE group_state SET count = count + 1 WHERE rule = ? AND clause = ? AND value = ?", key)
            return str(row["batch"]), int(row["count"]) + 1, float(row["due"])
        batch = new_id()
        conn.execute("INSERT INTO group_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (*key, batch, run.event.id, json_fields(run.fields), index, 1, due.timestamp()))
        return batch, 1, due.timestamp()

    batch, count, closes = await services.db.write(_join)
    if count == 1:
        await state.timers.schedule(GROUP, due, state_key(GROUP, *key), {"rule": run.rule.name})
        return StageOutcome(False, f"grouped by {stage.field} {value}: batch {batch} runs in "
                                   f"{format_duration(stage.within_s)}", parked=True)
    return StageOutcome(False, f"grouped into batch {batch} ({count} events so far, runs in "
                               f"{human_duration(closes - now.timestamp())})")


# -- actions ---------------------------------------------------------------------------------------------------


@actions.handles(SilenceAction)
async def silence(action: SilenceAction, run: RuleRun, services: Services) -> actions.ActionOutcome:
    fingerprint = value_of(run, action.by_field)
    if fingerprint is None:
        return actions.ActionOutcome(f"nothing silenced: {action.by_field} is not set")
    seconds = action.duration_s
    if seconds is None:
        text = value_of(run, action.duration_field or "") or ""
        if not is_duration(text) or duration_seconds(text) <= 0:
            return actions.ActionOutcome(f"nothing silenced: {text!r} is not a duration such as 30m or 1h")
        seconds = duration_seconds(text)
    state, by = manager(services), who(run.event)
    until = await services.alerts.mute(fingerprint, by, timedelta(seconds=seconds))
    await state.timers.schedule(SILENCE_END, until,
                                state_key(SILENCE_END, run.rule.state_key, action.fingerprint, fingerprint),
                                {"rule": run.rule.name, "alert": fingerprint})
    await services.audit_publish("silence.added", by, rule=run.rule.name, alert=fingerprint,
                                 until=until.isoformat(timespec="seconds"))
    if services.upstream is not None:  # an Alertmanager alert is silenced there too, until the same end
        await services.upstream.mirror_rule(fingerprint, until, by, run.rule.name)
    await services.delivery.follow(fingerprint, await services.alerts.status(fingerprint))
    return actions.ActionOutcome(f"silenced {fingerprint} for {format_duration(seconds)}")


__all__ = ["ESCALATE", "Stateful", "acknowledged_by", "key_prefix", "latest_status", "manager"]
