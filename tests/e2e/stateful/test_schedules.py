"""Schedules through a real engine: repeated firing, removal on reload, timers kept across an unchanged reload."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.testing import ChatClient
from tests.e2e.stateful.support import (
    START,
    compile_rules,
    drain,
    engine_for,
    notes,
)
from tests.support import ALICE_TOKEN, chat_url

# -- schedules ---------------------------------------------------------------------------------------------------------


async def test_a_schedule_fires_repeatedly_and_stops_when_its_rule_is_removed(config: Config) -> None:
    rules = 'rule tick:\n  on schedule every 1s\n  notify ops saying "tick {schedule.time}"\n'
    async with engine_for(config, rules) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await alice.wait_for(lambda f: len(notes(alice, "tick")) >= 3, timeout=10)
        old = engine.runtime.graph
        new, _ = compile_rules(config, "")
        engine.runtime.swap_graph(new, {})
        await engine.stateful.on_graph_swapped(old, new)
        await drain(alice, 0.5)
        count = len(notes(alice, "tick"))
        await drain(alice, 2.0)
        assert len(notes(alice, "tick")) == count
        assert [t for t in await engine.timers.pending() if t.kind == "schedule"] == []
    times = [datetime.fromisoformat(n["text"].split()[1]) for n in notes(alice, "tick")]
    assert all((b - a).total_seconds() == 1 for a, b in zip(times, times[1:], strict=False))


async def test_an_unchanged_schedule_keeps_its_timer_across_a_reload(config: Config) -> None:
    clock = ManualClock(START)
    rules = 'rule nightly:\n  on schedule every day at 03:00 in Europe/Berlin\n  notify ops saying "night"\n'
    async with engine_for(config, rules, clock) as engine:
        [before] = [t for t in await engine.timers.pending() if t.kind == "schedule"]
        old = engine.runtime.graph
        new, _ = compile_rules(config, rules + 'rule other:\n  on command other\n  reply "x"\n')
        engine.runtime.swap_graph(new, {})
        await engine.stateful.on_graph_swapped(old, new)
        [after] = [t for t in await engine.timers.pending() if t.kind == "schedule"]
        assert after == before and after.due == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)
        newer, _ = compile_rules(config, rules.replace("03:00", "04:00"))
        engine.runtime.swap_graph(newer, {})
        await engine.stateful.on_graph_swapped(new, newer)
        [moved] = [t for t in await engine.timers.pending() if t.kind == "schedule"]
        assert moved.due == datetime(2026, 6, 2, 2, 0, tzinfo=UTC)
