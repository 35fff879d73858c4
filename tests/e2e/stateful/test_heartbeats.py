"""The dead man's switch (issue 19): `on alert missing Watchdog for 10m` through a real engine, the heartbeat
posted to POST /hooks/alertmanager, the engine's clock moved by the test; durable across restarts."""

from __future__ import annotations

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.e2e.stateful.support import START, audit, drain, engine_for, notes, post_alert, settle, tick
from tests.support import ALICE_TOKEN, chat_url

RULES = '''
rule watchdog:
  on alert missing Watchdog for 10m
  notify ops
'''


def _said(client: ChatClient) -> list[str]:
    return [n["text"] for n in notes(client, "watchdog")]


async def _beat(engine: Engine, clock: ManualClock) -> None:
    """The heartbeat arrives now (by the engine's clock: handled before the clock moves on)."""
    await post_alert(engine, "Watchdog", service="alertmanager")
    await settle(engine)


async def test_fires_once_per_silence_and_says_when_it_is_back(config: Config) -> None:
    clock = ManualClock(START)  # 12:00 UTC
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await _beat(engine, clock)
        await tick(engine, clock, 9 * 60)
        await _beat(engine, clock)  # 12:09: each arrival re-arms the switch
        await tick(engine, clock, 9 * 60)
        await drain(alice)
        assert _said(alice) == []
        await tick(engine, clock, 2 * 60)  # 12:20, 11m after the last beat
        await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "watchdog")
        assert _said(alice) == ["Watchdog not heard from since 12:09 UTC, 11m ago"]
        for _ in range(3):  # a long silence is one message, not one a tick
            await tick(engine, clock, 15 * 60)
        await drain(alice)
        assert len(_said(alice)) == 1

        await _beat(engine, clock)  # 13:05
        await alice.wait_for(lambda f: len(_said(alice)) == 2)
        await _beat(engine, clock)  # "back" is said once
        await tick(engine, clock, 9 * 60)
        await drain(alice)
        assert _said(alice)[1:] == ["Watchdog is back, after 56m of silence"]
        await tick(engine, clock, 2 * 60)  # silent again: armed again by the return
        await alice.wait_for(lambda f: len(_said(alice)) == 3)
        assert _said(alice)[2] == "Watchdog not heard from since 13:05 UTC, 11m ago"
        assert [e["last_seen"] for e in await audit(engine, "heartbeat.missing")] == [
            "2026-06-01T12:09:00+00:00", "2026-06-01T13:05:00+00:00"]
        assert len(await audit(engine, "heartbeat.back")) == 1


async def test_other_alerts_do_not_count_as_the_heartbeat(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await tick(engine, clock, 5 * 60)
        await post_alert(engine, "DiskFull", service="alertmanager")
        await post_alert(engine, "Watchdog", service="alertmanager", resolved=True)
        await settle(engine)
        await tick(engine, clock, 5 * 60 + 1)  # armed when the rule was loaded: 10m since 12:00
        await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "watchdog")
        assert _said(alice) == ["Watchdog not heard from at all since watching began at 12:00 UTC, 10m ago"]


async def test_a_watched_heartbeat_is_not_an_unmatched_alert(config: Config) -> None:
    """With `[alerts] unmatched = "ops"`, an alert no rule matches goes to ops; a heartbeat a switch watches is
    handled by the switch, so it does not page ops every time it arrives."""
    config = config.model_copy(update={"alerts": config.alerts.model_copy(update={"unmatched": "ops"})})
    clock = ManualClock(START)
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await _beat(engine, clock)
        await _beat(engine, clock)
        await post_alert(engine, "Watchdog", service="alertmanager", resolved=True)
        await post_alert(engine, "DiskFull", service="alertmanager")
        await alice.wait_for(lambda f: f["type"] == "notification")
        await drain(alice)
        unmatched = [n["text"] for n in notes(alice, "(no rule matched)")]
        assert len(unmatched) == 1 and "DiskFull" in unmatched[0]


async def test_a_restart_does_not_reset_the_clock_nor_repeat_the_alarm(config: Config) -> None:
    clock = ManualClock(START)
    config = config.model_copy(update={"start_grace_s": 0.5})
    async with engine_for(config, RULES, clock) as engine:
        await _beat(engine, clock)  # 12:00
    clock.advance(8 * 60)  # down for 8 minutes
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await tick(engine, clock, 60)
        await drain(alice)
        assert _said(alice) == []
        await tick(engine, clock, 61)  # 10m after the beat before the restart, not 10m after the start
        await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "watchdog")
        assert _said(alice) == ["Watchdog not heard from since 12:00 UTC, 10m ago"]
    clock.advance(3600)
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await drain(alice, 1.5)  # past the start grace: still missing, but already said
        assert _said(alice) == []
        await _beat(engine, clock)
        await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "watchdog")
        assert _said(alice) == ["Watchdog is back, after 1h10m of silence"]
        assert len(await audit(engine, "heartbeat.missing")) == 1
