"""Dedupe, rate limits, groups, silences, escalations and persisted timers through a real engine; most tests move
an injected clock instead of sleeping, the restart tests run on real time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.testing import ChatClient
from tests.e2e.stateful.support import (
    START,
    answer,
    audit,
    drain,
    engine_for,
    notes,
    post_alert,
    press,
    runs,
    settle,
    tick,
)
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url

# -- dedupe, rate limit, group -------------------------------------------------------------------------------------

DEDUPE_RULES = ('rule dd:\n  on alert from db\n  dedupe by alert.fingerprint for 10m\n'
                '  notify ops saying "dd {alert.summary}"\n')


async def test_dedupe_drops_repeats_inside_the_window_only(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, DEDUPE_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "DiskFull")
        await post_alert(engine, "DiskFull")
        await post_alert(engine, "Other")
        await settle(engine)
        await tick(engine, clock, 9 * 60)
        await post_alert(engine, "DiskFull")  # still inside the 10m window
        await tick(engine, clock, 2 * 60)
        await post_alert(engine, "DiskFull")  # window over: news again
        await settle(engine)
        await drain(alice)
        assert [n["text"] for n in notes(alice, "dd")] == ["dd DiskFull", "dd Other", "dd DiskFull"]
        states = [s for s, _ in await runs(engine, "dd")]  # alerts of different fingerprints run side by side
        assert sorted(states) == ["REPORT_RESULT"] * 3 + ["SKIPPED"] * 2


async def test_dedupe_state_survives_a_restart(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, DEDUPE_RULES, clock) as engine:
        await post_alert(engine, "DiskFull")
        await settle(engine)
    async with engine_for(config, DEDUPE_RULES, clock) as engine:
        await post_alert(engine, "DiskFull")
        await settle(engine)
        assert [s for s, _ in await runs(engine, "dd")] == ["REPORT_RESULT", "SKIPPED"]


async def test_rate_limit_per_user_answers_with_when_to_retry(config: Config) -> None:
    rules = 'rule rl:\n  on command ping\n  at most 2 per 1h per command.user\n  reply "pong"\n'
    clock = ManualClock(START)
    async with engine_for(config, rules, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        assert (await answer(alice, "/ping"))["text"] == "pong"
        await tick(engine, clock, 600)
        assert (await answer(alice, "/ping"))["text"] == "pong"
        refused = (await answer(alice, "/ping"))["text"]
        assert refused == "Not run: rate limited (at most 2 per 1h for alice), try again in 50m."
        assert (await answer(bob, "/ping"))["text"] == "pong"  # a bucket per user
        await tick(engine, clock, 3001)
        assert (await answer(alice, "/ping"))["text"] == "pong"
        assert [s for s, _ in await runs(engine, "rl")].count("SKIPPED") == 1


async def test_group_runs_once_for_the_batch_with_the_first_events_fields(config: Config) -> None:
    rules = ('rule gr:\n  on alert from web\n  group by alert.service within 30s\n'
             '  notify ops saying "group starting with {alert.summary} ({group.count} alerts)"\n')
    clock = ManualClock(START)
    async with engine_for(config, rules, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        for name in ("First", "Second", "Third"):
            await post_alert(engine, name, service="web")
        await settle(engine)
        await drain(alice)
        assert notes(alice, "gr") == []
        await tick(engine, clock, 31)
        await alice.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "gr")
        await post_alert(engine, "Fourth", service="web")  # a new window
        await settle(engine)
        await tick(engine, clock, 31)
        await alice.wait_for(lambda f: f["type"] == "notification" and "Fourth" in f["text"])
        assert [n["text"] for n in notes(alice, "gr")] == ["group starting with First (3 alerts)",
                                                           "group starting with Fourth (1 alerts)"]
        trace = await runs(engine, "gr")
        assert [s for s, _ in trace] == ["SKIPPED", "SKIPPED", "SKIPPED", "REPORT_RESULT", "SKIPPED", "REPORT_RESULT"]
        assert all("grouped" in detail for state, detail in trace if state == "SKIPPED")
        assert [e["count"] for e in await audit(engine, "group.released")] == [3, 1]



# -- silences and escalations ----------------------------------------------------------------------------------------

SILENCE_RULES = '''
rule shop-note:
  on alert from shop
  notify ops saying "shop {alert.summary}" with buttons ack, quiet 1h

rule quiet:
  on button quiet
  silence alert by button.alert_fingerprint for {button.arg}
'''


async def test_a_silence_from_a_button_holds_until_the_alert_resolves(config: Config) -> None:
    async with engine_for(config, SILENCE_RULES) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "Down", service="shop", summary="one")
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        quiet = next(b["id"] for b in note["buttons"] if b["action"] == "quiet")
        await alice.press(quiet)
        await settle(engine)
        await post_alert(engine, "Down", service="shop", summary="two")  # silenced
        await settle(engine)
        await post_alert(engine, "Down", service="shop", resolved=True)  # resolving ends the silence
        await settle(engine)
        await post_alert(engine, "Down", service="shop", summary="three")
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "shop three")
        assert [n["text"] for n in notes(alice, "shop-note")] == ["shop one", "shop three"]
        assert [d for s, d in await runs(engine, "shop-note")][1].startswith("muted until")
        [added] = await audit(engine, "silence.added")
        assert added["actor"] == "alice"


MUTE_RULES = 'rule shop-page:\n  on alert from shop\n  notify ops saying "shop {alert.summary}" with buttons\n'


async def test_mute_1h_survives_a_restart_and_ends_when_the_alert_resolves(config: Config) -> None:
    async with engine_for(config, MUTE_RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "Down", service="shop", summary="one")
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        mute = next(b["id"] for b in note["buttons"] if (b["action"], b["arg"]) == ("mute", "1h"))
        reply = await press(alice, mute)
        assert reply["text"].startswith("Muted by alice until")
    async with engine_for(config, MUTE_RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "Down", service="shop", summary="two")  # still muted after the restart
        await settle(engine)
        await post_alert(engine, "Down", service="shop", resolved=True)  # resolving ends the mute
        await settle(engine)
        await post_alert(engine, "Down", service="shop", summary="three")
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "shop three")
        await drain(alice)
        assert [n["text"] for n in notes(alice, "shop-page")] == ["shop three"]
        details = [detail for _, detail in await runs(engine, "shop-page")]
        assert details[1].startswith("muted until")  # "two" was dropped by the mute, not lost
        assert [a["actor"] for a in await audit(engine, "button.pressed")] == ["alice"]


async def test_a_mute_button_mutes_for_its_own_duration(config: Config) -> None:
    rules = ('rule shop-page:\n  on alert from shop\n'
             '  notify ops saying "shop {alert.summary}" with buttons ack, mute 30m, mute 4h\n')
    async with engine_for(config, rules) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        fingerprint = await post_alert(engine, "Down", service="shop", summary="one")
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        assert [b["label"] for b in note["buttons"]] == ["Acknowledge", "Mute 30m", "Mute 4h"]
        mute = next(b["id"] for b in note["buttons"] if b["arg"] == "4h")
        before = datetime.now(UTC)
        reply = await press(alice, mute)
        until = await engine.runtime.services.alerts.muted_until(fingerprint)
    assert reply["text"].startswith("Muted by alice until") and until is not None
    assert timedelta(hours=3, minutes=59) < until - before < timedelta(hours=4, minutes=1)


ESCALATE_RULES = '''
team pager = @bob

rule esc:
  on alert from db
  notify ops saying "db {alert.summary}" with buttons ack
  escalate to pager after {after} unless acknowledged
'''


async def test_escalation_only_when_not_acknowledged(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, ESCALATE_RULES.replace("{after}", "15m"), clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await post_alert(engine, "Acked")
        await post_alert(engine, "Ignored")
        await alice.wait_for(lambda f: len(notes(alice, "esc")) == 2)
        acked = next(n for n in notes(alice, "esc") if n["text"] == "db Acked")
        assert (await press(alice, acked["buttons"][0]["id"]))["text"] == "Acknowledged by alice."
        await post_alert(engine, "Ignored")  # a repeated notification does not push the escalation later
        await tick(engine, clock, 14 * 60)
        await drain(bob)
        assert notes(bob, "esc") == []
        await tick(engine, clock, 61)
        note = await bob.wait_for(lambda f: f["type"] == "notification")
        await drain(bob)
        assert [n["text"] for n in notes(bob, "esc")] == [note["text"]]
        assert note["text"].startswith("Escalated: not acknowledged after 15m: ") and "Ignored" in note["text"]
        assert [b["action"] for b in note["buttons"]] == ["ack", "mute"]
        [skipped] = await audit(engine, "escalation.skipped")
        assert skipped["reason"] == "acknowledged by alice"
        assert len(await audit(engine, "escalation.sent")) == 1


async def test_a_muted_alert_does_not_escalate(config: Config) -> None:
    rules = ESCALATE_RULES.replace("{after}", "15m").replace("with buttons ack", "with buttons")
    clock = ManualClock(START)
    async with engine_for(config, rules, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await post_alert(engine, "Noisy")
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        mute = next(b["id"] for b in note["buttons"] if b["action"] == "mute")
        assert (await press(alice, mute))["text"].startswith("Muted by alice until")
        await post_alert(engine, "Noisy")  # a second firing while muted arms nothing new
        await tick(engine, clock, 16 * 60)
        await drain(bob)
        assert notes(bob, "esc") == []
        [skipped] = await audit(engine, "escalation.skipped")
        assert skipped["reason"].startswith("muted until ")
        assert await audit(engine, "escalation.sent") == []


async def test_a_restart_inside_the_escalation_window_still_escalates_once_on_time(config: Config) -> None:
    rules = ESCALATE_RULES.replace("{after}", "4s")
    async with engine_for(config, rules) as engine:
        posted = time.monotonic()
        fingerprint = await post_alert(engine, "Slow")
        await settle(engine)
    await asyncio.sleep(0.5)
    async with engine_for(config, rules) as engine, ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await bob.wait_for(lambda f: f["type"] == "notification", timeout=15)
        late = time.monotonic() - posted
        await drain(bob, 1.5)
        keys = [t for t in await engine.db.call(lambda c: [r[0] for r in c.execute(
            "SELECT key FROM timers_fired WHERE kind = 'escalate'")])]
    assert 3.9 <= late <= 6.0, late
    assert len(notes(bob, "esc")) == 1
    assert len(keys) == 1 and keys[0].endswith(fingerprint)


async def test_an_overdue_timer_fires_once_on_start_after_a_grace_for_clients(config: Config) -> None:
    """Timers that came due while Herald was down wait `start_grace_s` after a start (issue 21 item 8), so people's
    clients reconnect before escalations go out; then each fires once, on this start or the next."""
    clock = ManualClock(START)
    rules = ESCALATE_RULES.replace("{after}", "15m")
    config = config.model_copy(update={"start_grace_s": 2.0})  # time enough to connect, even on a loaded machine
    async with engine_for(config, rules, clock) as engine:
        await post_alert(engine, "WhileDown")
        await settle(engine)
    clock.advance(3600)  # Herald is down for an hour
    for restart in range(2):
        async with engine_for(config, rules, clock) as engine:
            await settle(engine)  # started; the overdue timer waits for the grace
            async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
                if restart == 0:  # bob connected after the start, within the grace: he hears it live (without the
                    # grace it went out before he connected, and he never would)
                    note = await bob.wait_for(lambda f: f["type"] == "notification", timeout=10)
                    assert note["text"].startswith("Escalated:") and "replay" not in note
                await asyncio.sleep(0.3 if restart else 0)
                assert len(await audit(engine, "escalation.sent")) == 1
                assert [t for t in await engine.timers.pending() if t.kind == "escalate"] == []
