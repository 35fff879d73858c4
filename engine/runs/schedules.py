"""Schedules: `on schedule every D | every day at HH:MM [in ZONE] | cron "m h dom mon dow" [in ZONE]`.

Each schedule rule has one persisted timer (engine.timers) keyed by rule name and the schedule's own fingerprint.
When it fires, the next occurrence is planned first, then a `ScheduleData` event goes through the journal like any
other event and matches that rule only (`schedule.rule`). A schedule overdue after downtime fires once, then goes
back to its rhythm (no burst of missed runs). `replan` keeps the timers of unchanged schedules across a reload.

Times of day are computed in the schedule's zone (default: the host's, from TZ or /etc/localtime) with zoneinfo and
converted to UTC, so DST changes neither double nor drop a run: a wall time that does not exist (the hour skipped in
spring) runs at the same offset as before the change, which lands just after the jump; a wall time that happens
twice (autumn) runs at its first occurrence only. A cron whose hour field is `*` follows real time instead: it also
runs in the repeated hour, as Vixie cron does.

Cron is our own small matcher (croniter is unmaintained): five fields with lists, ranges, steps, `*`, and names
(jan-dec, sun-sat); day of week 0-7 with 0 and 7 Sunday; when both day fields are restricted a day matching either
runs (Vixie semantics).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dsl import EventGraph
from dsl.cron import CronError, parse_cron
from dsl.plan import ScheduleSpec
from engine.core.errors import Busy
from engine.core.events import Event, ScheduleData
from engine.core.ids import derived_id
from engine.core.timers import Timer, state_key
from engine.runs.stateful import ClausePart, Stateful

log = logging.getLogger("herald.schedules")

FIRE = "schedule"
MAX_DAYS = 366 * 8 + 2  # Feb 29 on a given weekday can be years away


@dataclass(frozen=True)
class Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*`
    any_weekday: bool
    any_hour: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """The matcher for `text` (read by dsl.cron, the same reading the compiler checks); CronError if bad."""
        f = parse_cron(text)
        return cls(tuple(sorted(f.minutes)), tuple(sorted(f.hours)), f.days, f.months, f.weekdays, f.any_day,
                   f.any_weekday, f.any_hour)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: datetime, zone: tzinfo) -> datetime:
        """The first run strictly after `after` (aware), as UTC."""
        day = after.astimezone(zone).date()
        for _ in range(MAX_DAYS):
            if self.day_matches(day):
                found = [instant for h in self.hours for m in self.minutes
                         for instant in _instants(datetime.combine(day, time(h, m)), zone, self.any_hour)
                         if instant > after]
                if found:
                    return min(found)
            day += timedelta(days=1)
        raise CronError("this cron expression never matches a real date")


def _instants(naive: datetime, zone: tzinfo, both_folds: bool) -> list[datetime]:
    """The UTC instants a local wall time stands for: its first occurrence (for a time skipped by DST, the instant
    at the offset before the change), plus the repeated one when `both_folds` and the time is ambiguous."""
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if not both_folds:
        return [first]
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second != first and second.astimezone(zone).replace(tzinfo=None) == naive \
            and first.astimezone(zone).replace(tzinfo=None) == naive:
        return [first, second]
    return [first]


def host_zone() -> tzinfo:
    """The engine's time zone: TZ, else /etc/localtime, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        localtime = Path("/etc/localtime")
        if localtime.exists():
            with localtime.open("rb") as handle:
                return ZoneInfo.from_file(handle, key="localtime")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        log.warning("cannot read the host's time zone; schedules without 'in ZONE' use UTC")
    return UTC


def zone_of(spec: ScheduleSpec) -> tzinfo:
    return ZoneInfo(spec.zone) if spec.zone else host_zone()


def next_run(spec: ScheduleSpec, after: datetime, *, previous: datetime | None = None) -> datetime:
    """When a schedule fires next, strictly after `after`. `every` keeps to its grid from `previous` (the due time
    that just fired) when given, skipping occurrences that are already past."""
    if spec.how == "every":
        step = spec.every_s or 1.0
        if previous is None:
            return after + timedelta(seconds=step)
        missed = max(0, math.floor((after - previous).total_seconds() / step))
        due = previous + timedelta(seconds=step * (missed + 1))
        return due if due > after else due + timedelta(seconds=step)
    if spec.how == "daily":
        hour, minute = (int(x) for x in (spec.at or "00:00").split(":"))
        return Cron.parse(f"{minute} {hour} * * *").next_after(after, zone_of(spec))
    return Cron.parse(spec.cron or "").next_after(after, zone_of(spec))


def spec_fingerprint(spec: ScheduleSpec) -> str:
    text = f"{spec.how}|{spec.every_s}|{spec.at}|{spec.cron}|{spec.zone}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def timer_key(rule: str, spec: ScheduleSpec) -> str:
    return state_key(FIRE, rule, spec_fingerprint(spec))


async def replan(state: Stateful, graph: EventGraph) -> None:
    """Keep the timers of unchanged schedules, cancel those of removed or changed ones, add new ones."""
    wanted = {timer_key(rule.name, rule.schedule): rule for rule in graph.rules if rule.schedule is not None}
    have = {timer.key for timer in await state.timers.pending() if timer.kind == FIRE}
    for key in have - wanted.keys():
        await state.timers.cancel(key)
    now = state.now()
    for key in wanted.keys() - have:
        rule = wanted[key]
        assert rule.schedule is not None
        try:
            due = next_run(rule.schedule, now)
        except (CronError, ZoneInfoNotFoundError) as exc:
            log.error("schedule of rule %s cannot be planned: %s", rule.name, exc)
            continue
        await state.timers.schedule(FIRE, due, key, {"rule": rule.name})


async def fire(state: Stateful, timer: Timer) -> None:
    """Plan the next occurrence, then raise this one's event."""
    name = timer.payload["rule"]
    rule = state.current_rule(name)
    if rule is None or rule.schedule is None or timer_key(name, rule.schedule) != timer.key:
        return  # removed or changed since it was planned; replan has (or will have) planned the new one
    due = next_run(rule.schedule, state.now(), previous=timer.due)
    await state.timers.schedule(FIRE, due, timer.key, {"rule": name})
    # The event's id derives from the occurrence, so the journal would refuse a second one for the same moment.
    event = Event(id=derived_id(timer.due, "schedule", timer.key, timer.due.isoformat()), source="schedule",
                  time=state.now(), data=ScheduleData(rule=name, time=timer.due.isoformat(timespec="seconds")))
    try:
        await state.services.submit([event])
    except Busy as exc:
        log.warning("schedule %s at %s not raised: %s", name, timer.due.isoformat(), exc)
    except sqlite3.IntegrityError:
        log.warning("schedule %s at %s was already raised", name, timer.due.isoformat())


PART = ClausePart(timers={FIRE: fire}, on_swap=replan)
