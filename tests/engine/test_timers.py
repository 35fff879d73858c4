"""Persisted timers (fire once, in order, overdue ones on start) and schedule arithmetic across real DST changes
(Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dsl.plan import ScheduleSpec
from engine.core import timers as timers_module
from engine.core.store import Database
from engine.core.timers import ManualClock, Timer, Timers, key_prefix, state_key
from engine.runs.schedules import Cron, CronError, next_run

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def runs(spec: ScheduleSpec, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], start
    while True:
        at = next_run(spec, at)
        if at >= end:
            return out
        out.append(at)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


# -- schedules -------------------------------------------------------------------------------------------------


def test_daily_in_spring_runs_once_even_when_the_wall_time_does_not_exist() -> None:
    spec = ScheduleSpec(how="daily", at="02:30", zone="Europe/Berlin")
    got = runs(spec, berlin(2026, 3, 27, 12), berlin(2026, 3, 31, 12))
    assert got == [datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
                   datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 02:30 does not exist: 03:30 CEST, just after the jump
                   datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
                   datetime(2026, 3, 31, 0, 30, tzinfo=UTC)]


def test_daily_in_autumn_runs_once_when_the_wall_time_happens_twice() -> None:
    spec = ScheduleSpec(how="daily", at="02:30", zone="Europe/Berlin")
    got = runs(spec, berlin(2026, 10, 24, 12), berlin(2026, 10, 26, 12))
    assert got == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST); not again at 01:30 UTC
                   datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_daily_at_3_keeps_its_wall_time_across_both_changes() -> None:
    spec = ScheduleSpec(how="daily", at="03:00", zone="Europe/Berlin")
    got = runs(spec, berlin(2026, 1, 1), berlin(2027, 1, 1))
    assert len(got) == 365
    assert {at.astimezone(BERLIN).strftime("%H:%M") for at in got} == {"03:00"}
    assert len({at.astimezone(BERLIN).date() for at in got}) == 365


def test_hourly_cron_follows_real_time_through_dst() -> None:
    spec = ScheduleSpec(how="cron", cron="30 * * * *", zone="Europe/Berlin")
    spring = runs(spec, berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0))
    autumn = runs(spec, berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0))
    assert len(spring) == 23 and len(set(spring)) == 23  # a 23-hour day
    assert len(autumn) == 25 and len(set(autumn)) == 25  # a 25-hour day: the repeated 02:30 runs in real time too
    assert all(b - a == timedelta(hours=1) for a, b in zip(autumn, autumn[1:], strict=False))


def test_fixed_cron_times_in_the_skipped_and_repeated_hours() -> None:
    spec = ScheduleSpec(how="cron", cron="0,30 2 * * *", zone="Europe/Berlin")
    spring = runs(spec, berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 29, 12, 0))
    autumn = runs(spec, berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 25, 12, 0))
    assert spring == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)]
    assert autumn == [datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]


def test_cron_fields_lists_ranges_steps_and_names() -> None:
    cron = Cron.parse("*/15 9-17/4 * jan,JUL mon-fri")
    assert cron.minutes == (0, 15, 30, 45) and cron.hours == (9, 13, 17)
    assert cron.months == {1, 7} and cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("5 0 * * 7").weekdays == {0}  # 7 is Sunday too
    assert Cron.parse("0 0 1-3,15 * *").days == {1, 2, 3, 15}
    assert Cron.parse("0 0 10/10 * *").days == {10, 20, 30}
    utc = ZoneInfo("UTC")
    # Friday 2026-01-02 18:00 -> the next weekday slot is Monday 2026-01-05 09:00
    assert cron.next_after(datetime(2026, 1, 2, 18, 0, tzinfo=UTC), utc) == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    # both day fields restricted: either matches (Vixie); 2026-06-13 is a Saturday, the 15th a Monday
    either = Cron.parse("0 12 13 * 1")
    assert either.next_after(datetime(2026, 6, 12, tzinfo=UTC), utc) == datetime(2026, 6, 13, 12, tzinfo=UTC)
    assert either.next_after(datetime(2026, 6, 13, 13, tzinfo=UTC), utc) == datetime(2026, 6, 15, 12, tzinfo=UTC)
    leap = Cron.parse("0 0 29 feb *")
    assert leap.next_after(datetime(2026, 3, 1, tzinfo=UTC), utc) == datetime(2028, 2, 29, tzinfo=UTC)
    for bad in ("* * * *", "60 * * * *", "* * * foo *", "*/0 * * * *", "5-1 * * * *"):
        with pytest.raises(CronError):
            Cron.parse(bad)
    with pytest.raises(CronError):
        Cron.parse("0 0 31 feb *").next_after(datetime(2026, 1, 1, tzinfo=UTC), utc)


def test_every_keeps_its_grid_and_skips_what_passed_while_down() -> None:
    spec = ScheduleSpec(how="every", every_s=60)
    previous = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert next_run(spec, previous, previous=previous) == previous + timedelta(minutes=1)
    later = previous + timedelta(minutes=10, seconds=5)  # fired 10 minutes late: once, then back on the grid
    assert next_run(spec, later, previous=previous) == previous + timedelta(minutes=11)
    assert date(2026, 6, 1) == next_run(spec, previous).date()


# -- timers ----------------------------------------------------------------------------------------------------


async def _open(path: Path) -> Database:
    db = Database(path)
    await db.open([timers_module.SCHEMA])
    return db


def _recording(db: Database, clock: ManualClock) -> tuple[Timers, list[str]]:
    """Timers whose kind "t" records the key of each timer it fires, in order."""
    timers = Timers(db, clock=clock)
    fired: list[str] = []

    async def record(timer: Timer) -> None:
        fired.append(timer.key)

    timers.on("t", record)
    return timers, fired


async def test_timers_fire_in_order_once_and_can_be_cancelled(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    clock = ManualClock(T0)
    timers, fired = _recording(db, clock)
    for n, seconds in enumerate((30, 10, 20, 40)):
        await timers.schedule("t", T0 + timedelta(seconds=seconds), state_key("t", "rule", n), {"n": n})
    await timers.cancel(state_key("t", "rule", 3))
    assert not await timers.schedule("t", T0 + timedelta(seconds=1), state_key("t", "rule", 0), {}, replace=False)
    loop = asyncio.create_task(timers.run())
    try:
        await asyncio.sleep(0.1)
        assert fired == []
        clock.advance(25)
        timers.poke()
        await asyncio.sleep(0.2)
        assert fired == [state_key("t", "rule", 1), state_key("t", "rule", 2)]
        clock.advance(60)
        timers.poke()
        await asyncio.sleep(0.2)
        assert fired == [state_key("t", "rule", n) for n in (1, 2, 0)]
        assert await timers.cancel_prefix(key_prefix("t", "rule")) == 0
    finally:
        loop.cancel()
        await db.close()


async def test_an_overdue_timer_fires_once_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await _open(tmp_path)
    await Timers(db, clock=clock).schedule("t", T0 + timedelta(minutes=15), "escalation", {})
    await db.close()
    clock.advance(3600)  # down for an hour
    counts: Counter[str] = Counter()
    for _ in range(2):  # start twice: the second start finds nothing to fire
        db = await _open(tmp_path)
        timers = Timers(db, clock=clock)

        async def count(timer: Timer) -> None:
            counts[timer.key] += 1

        timers.on("t", count)
        loop = asyncio.create_task(timers.run())
        await asyncio.sleep(0.2)
        loop.cancel()
        assert await timers.fired("escalation") == [T0 + timedelta(minutes=15)]
        await db.close()
    assert counts == {"escalation": 1}


async def test_firing_forgets_fired_records_past_their_week_without_reading_the_week(tmp_path: Path) -> None:
    """What fired is remembered a week (`FIRED_KEPT_S`); forgetting the older records at each firing must read only
    them: SQLite's VM instructions for a firing are about the same with 100 and with 20,000 recent records."""
    db = await _open(tmp_path)
    timers, fired = _recording(db, ManualClock(T0))
    now = time.time()

    def remember(conn: sqlite3.Connection, count: int, at: float) -> None:
        conn.executemany("INSERT INTO timers_fired (key, kind, due, fired) VALUES (?, 't', 0, ?)",
                         [(f"old-{at}-{n}", at) for n in range(count)])

    instructions = 0

    def count() -> int:
        nonlocal instructions
        instructions += 1
        return 0

    async def fire_one(key: str) -> int:
        nonlocal instructions
        await timers.schedule("t", T0, key, {})
        instructions = 0
        await db.call(lambda conn: conn.set_progress_handler(count, 1))  # at every instruction: an exact count
        loop = asyncio.create_task(timers.run())
        try:
            for _ in range(100):
                await asyncio.sleep(0.01)
                if key in fired:
                    break
        finally:
            loop.cancel()
            await db.call(lambda conn: conn.set_progress_handler(None, 1))
        assert key in fired
        return instructions

    def kept(conn: sqlite3.Connection) -> tuple[int, int]:
        old, recent = conn.execute("SELECT sum(fired < ?), sum(fired >= ?) FROM timers_fired",
                                   (now - timers_module.FIRED_KEPT_S, now - timers_module.FIRED_KEPT_S)).fetchone()
        return int(old or 0), int(recent or 0)

    try:
        await db.write(remember, 30, now - timers_module.FIRED_KEPT_S - 3600)
        await db.write(remember, 100, now - 3600)
        few = await fire_one("first")
        assert await db.call(kept) == (0, 101)  # the old records went, the week and the new one stayed

        await db.write(remember, 20_000, now - 60)
        many = await fire_one("second")
        assert await db.call(kept) == (0, 20_102)
        assert many <= 2 * few, f"{few} instructions with 100 records, {many} with 20,000"
    finally:
        await db.close()
