"""The dead man's switch (issue 19): `on alert missing Watchdog for 10m notify ops`.

A heartbeat alert (Alertmanager's Watchdog, always firing, re-sent every repeat_interval) proves the whole alerting
path works; its silence is the alert. Each rule `on alert missing NAME for D` has one row in `heartbeat_state` and
one persisted timer, keyed by the rule's state key, NAME and D:

- armed when the rule is loaded (the first time: a restart keeps the row, so it does not reset the clock);
- every firing alert whose alertname is NAME stores its arrival (`last_seen`) and moves the timer to arrival + D;
- when the timer fires, the heartbeat is missing: the row says since when, and a `heartbeat` event with state
  "missing" ("Watchdog not heard from since 02:10 UTC, 10m ago") runs the rule. No timer is planned after that, so
  a silence fires once, however long it lasts;
- the first arrival after that runs the rule once more with state "back" ("Watchdog is back, after 25m of silence").

Times come from the engine's clock, so tests move time instead of sleeping. A timer that came due while Herald was
down fires once after the start grace; a heartbeat arriving within the grace moves it first, so no false alarm.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta

from dsl import EventGraph
from dsl.graph import CompiledRule
from dsl.values import format_duration
from engine.core.errors import Busy
from engine.core.events import AlertData, Event, HeartbeatData
from engine.core.ids import derived_id
from engine.core.timers import Timer, key_prefix, state_key
from engine.runs.stateful import ClausePart, Stateful

log = logging.getLogger("herald.heartbeats")

MISSING = "heartbeat.missing"

SCHEMA = """
CREATE TABLE IF NOT EXISTS heartbeat_state (
    key TEXT PRIMARY KEY,   -- the timer's key: the rule's state key, the alert name and the duration
    name TEXT NOT NULL,     -- the alertname watched
    armed REAL NOT NULL,    -- when watching began (UTC seconds)
    last_seen REAL,         -- the last firing arrival of that alert
    missing REAL            -- since when it is reported missing; NULL while it is heard from
);
"""


def switch_key(rule: CompiledRule) -> str:
    assert rule.missing is not None
    return state_key(MISSING, rule.state_key, rule.missing.name, rule.missing.for_s)


def _switches(graph: EventGraph) -> dict[str, CompiledRule]:
    return {switch_key(rule): rule for rule in graph.rules if rule.missing is not None}


async def replan(state: Stateful, graph: EventGraph) -> None:
    """After a graph swap (and at start): forget switches of rules that are gone or changed, arm new ones, and give
    every switch that is not already missing its timer (kept as it is when it has one)."""
    wanted, now = _switches(graph), state.now().timestamp()
    pending = {timer.key for timer in await state.timers.pending(key_prefix(MISSING))}
    for key in pending - wanted.keys():
        await state.timers.cancel(key)

    def _arm(conn: sqlite3.Connection) -> list[sqlite3.Row]:
        stale = [row["key"] for row in conn.execute("SELECT key FROM heartbeat_state")
                 if row["key"] not in wanted]
        conn.executemany("DELETE FROM heartbeat_state WHERE key = ?", [(key,) for key in stale])
        conn.executemany("INSERT OR IGNORE INTO heartbeat_state (key, name, armed) VALUES (?, ?, ?)",
                         [(key, rule.missing.name, now) for key, rule in wanted.items() if rule.missing])
        return conn.execute("SELECT * FROM heartbeat_state WHERE missing IS NULL").fetchall()

    for row in await state.services.db.write(_arm):
        rule = wanted[row["key"]]
        if row["key"] in pending or rule.missing is None:
            continue
        since = row["last_seen"] if row["last_seen"] is not None else row["armed"]
        due = datetime.fromtimestamp(since, UTC) + timedelta(seconds=rule.missing.for_s)
        await state.timers.schedule(MISSING, due, row["key"], {"rule": rule.state_key})


async def alert_arrived(state: Stateful, event: Event, data: AlertData) -> bool:
    """A firing alert named like a watched heartbeat re-arms its switch, and says it is back if it was missing.
    Returns whether a switch watches this alert (its arrivals, and its resolves, are then not "unmatched")."""
    name = data.name or data.labels.get("alertname")
    rules = [rule for rule in state.runtime.graph.rules if rule.missing is not None and rule.missing.name == name]
    if data.status != "firing":
        return bool(rules)
    for rule in rules:
        assert rule.missing is not None
        key, now = switch_key(rule), state.now()

        before = await state.services.db.write(_seen, key, rule.missing.name, now.timestamp())
        await state.timers.schedule(MISSING, now + timedelta(seconds=rule.missing.for_s), key,
                                    {"rule": rule.state_key})
        if before is not None and before["missing"] is not None:
            silent = now.timestamp() - (before["last_seen"] or before["armed"])
            await _raise(state, rule, "back", key, before["last_seen"], silent,
                         f"{rule.missing.name} is back, after {_ago(silent)} of silence")
    return bool(rules)


async def missing_due(state: Stateful, timer: Timer) -> None:
    rule = state.current_rule(timer.payload["rule"])
    if rule is None or rule.missing is None or switch_key(rule) != timer.key:
        return  # the rule changed or went away; replan has planned what is wanted now
    now = state.now()

    def _declare(conn: sqlite3.Connection) -> sqlite3.Row | None:
        row = conn.execute("SELECT * FROM heartbeat_state WHERE key = ?", (timer.key,)).fetchone()
        if row is None or row["missing"] is not None:
            return None
        conn.execute("UPDATE heartbeat_state SET missing = ? WHERE key = ?", (now.timestamp(), timer.key))
        return row

    row = await state.services.db.write(_declare)
    if row is None:
        return
    name, last = rule.missing.name, row["last_seen"]
    since = last if last is not None else row["armed"]
    silent = now.timestamp() - since
    if last is not None:
        text = f"{name} not heard from since {_clock(since, now)}, {_ago(silent)} ago"
    else:
        text = f"{name} not heard from at all since watching began at {_clock(since, now)}, {_ago(silent)} ago"
    await _raise(state, rule, "missing", timer.key, last, silent, text)


async def _raise(state: Stateful, rule: CompiledRule, what: str, key: str, last_seen: float | None, silent: float,
                 summary: str) -> None:
    """Run the rule on a heartbeat event (through the journal, like any event)."""
    assert rule.missing is not None
    now = state.now()
    seen = datetime.fromtimestamp(last_seen, UTC).isoformat(timespec="seconds") if last_seen is not None else None
    event = Event(id=derived_id(now, "heartbeat", key, what, now.isoformat()), source="heartbeat", time=now,
                  data=HeartbeatData(rule=rule.name, name=rule.missing.name, state=what,  # type: ignore[arg-type]
                                     last_seen=seen, silent_for=round(silent), summary=summary))
    await state.services.audit_publish(f"heartbeat.{what}", "system", rule=rule.name, name=rule.missing.name,
                                       last_seen=seen)
    try:
        await state.services.submit([event])
    except Busy as exc:
        log.warning("heartbeat %s of %s not raised: %s", what, rule.missing.name, exc)
    except sqlite3.IntegrityError:
        log.warning("heartbeat %s of %s was already raised", what, rule.missing.name)


def _seen(conn: sqlite3.Connection, key: str, name: str, now: float) -> sqlite3.Row | None:
    """Store an arrival; return the switch as it was before it."""
    before: sqlite3.Row | None = conn.execute("SELECT * FROM heartbeat_state WHERE key = ?", (key,)).fetchone()
    conn.execute("INSERT INTO heartbeat_state (key, name, armed, last_seen) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET last_seen = excluded.last_seen, missing = NULL",
                 (key, name, now, now))
    return before


def _clock(when: float, now: datetime) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return f"{moment:%H:%M} UTC" if now - moment < timedelta(hours=20) else f"{moment:%Y-%m-%d %H:%M} UTC"


def _ago(seconds: float) -> str:
    return format_duration(round(seconds / 60) * 60 if seconds >= 60 else max(1, round(seconds)))


PART = ClausePart(timers={MISSING: missing_due}, on_swap=replan, on_alert=alert_arrived)
