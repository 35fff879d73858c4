"""Stateful clauses through a real engine, with real events over HTTP and WebSocket: dedupe, rate limits, groups,
confirmations (issue 6), silences, escalations, persisted timers across restarts, and schedules.

Most tests move an injected clock (engine.timers.ManualClock) instead of sleeping; the restart and schedule tests
run on real time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dsl import EventGraph
from engine.app import Engine
from engine.cli_client import alert_payload
from engine.config import Config, load_config
from engine.rules import compile_paths
from engine.testing import ChatClient
from engine.timers import Clock, ManualClock
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url, http_url

DAVE_TOKEN = "dave-chat-token-0123456789ab"
ERIN_TOKEN = "erin-chat-token-0123456789ab"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(config_file: Path) -> Config:
    """The shared test config plus two more admins, dave and erin, for `by another admin`."""
    text = config_file.read_text() + f"""
[principals.dave]
roles = ["admin"]
chat_tokens = ["{DAVE_TOKEN}"]

[principals.erin]
roles = ["admin"]
chat_tokens = ["{ERIN_TOKEN}"]
"""
    config_file.write_text(text)
    return load_config(config_file)


def compile_rules(config: Config, rules: str) -> tuple[EventGraph, Any]:
    (config.rules_dir / "stateful.rules").write_text(rules)
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    return result.graph, result.teams


@asynccontextmanager
async def engine_for(config: Config, rules: str, clock: Clock | None = None) -> AsyncIterator[Engine]:
    graph, teams = compile_rules(config, rules)
    engine = Engine(config, graph, teams=teams, clock=clock, watch=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def post_alert(engine: Engine, name: str, *, service: str = "db", resolved: bool = False,
                     summary: str | None = None) -> str:
    payload = alert_payload({"alertname": name, "service": service}, summary=summary or name, resolved=resolved)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()
    return str(payload["alerts"][0]["fingerprint"])  # type: ignore[index]


async def settle(engine: Engine) -> None:
    """Wait until every accepted event has been handled."""
    for _ in range(400):
        left = await engine.db.call(
            lambda c: c.execute("SELECT count(*) FROM events WHERE status = 'accepted'").fetchone()[0])
        if left == 0:
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(0.025)
    raise AssertionError("events were not handled in time")


async def runs(engine: Engine, rule: str) -> list[tuple[str, str]]:
    """Each run of `rule`: (last state, its detail), in order."""
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT run_id, state, detail FROM run_trace WHERE rule = ? ORDER BY rowid", (rule,)).fetchall())
    last: dict[str, tuple[str, str]] = {}
    for row in rows:
        last[row["run_id"]] = (row["state"], row["detail"])
    return list(last.values())


async def audit(engine: Engine, action: str) -> list[dict[str, Any]]:
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT * FROM audit_log WHERE action = ? ORDER BY seq", (action,)).fetchall())
    out = []
    for row in rows:
        entry = dict(row)
        entry.update(json.loads(entry.get("data") or "{}"))
        out.append(entry)
    return out


async def tick(engine: Engine, clock: ManualClock, seconds: float) -> None:
    """Move the engine's clock and give its timer loop a moment to fire what came due."""
    clock.advance(seconds)
    engine.timers.poke()
    await asyncio.sleep(0.3)
    await settle(engine)


def notes(client: ChatClient, rule: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["type"] == "notification" and f["rule"] == rule]


async def drain(client: ChatClient, seconds: float = 0.3) -> None:
    """Read whatever frames arrive for a moment."""
    try:
        await client.wait_for(lambda f: False, timeout=seconds)
    except TimeoutError:
        pass


async def answer(client: ChatClient, text: str, kind: str = "reply") -> dict[str, Any]:
    msg = await client.say(text)
    return await client.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == kind, timeout=20)


async def press(client: ChatClient, button: str, kind: str = "reply") -> dict[str, Any]:
    pid = await client.press(button)
    return await client.wait_for(lambda f: f.get("in_reply_to") == pid and f["type"] in (kind, "error"), timeout=20)


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
        states = [s for s, _ in await runs(engine, "dd")]
        assert states == ["REPORT_RESULT", "SKIPPED", "REPORT_RESULT", "SKIPPED", "REPORT_RESULT"]


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
        assert refused == "Not run: rate limited (at most 2 per 1h for alice), try again in 3000s."
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


# -- confirmations (issue 6) ---------------------------------------------------------------------------------------

CONFIRM_RULES = '''
rule wipe:
  on command wipe
  require role admin
  require confirmation within 1m
  reply "wiped by {command.user}"

rule drop:
  on command drop
  require role admin
  require confirmation by another admin within 1m
  reply "dropped"
'''


def confirm_button(client: ChatClient, nth: int = -1) -> str:
    buttons = [f["buttons"][0] for f in client.frames if f["type"] == "notification" and f["buttons"]
               and f["buttons"][0]["action"] == "confirm"]
    return str(buttons[nth]["id"])


async def test_confirmation_by_the_requester(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, CONFIRM_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        waiting = await answer(alice, "/wipe", kind="progress")
        assert waiting["state"] == "INIT"
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        assert note["text"] == "Confirm within 1m: /wipe" and note["buttons"][0]["label"] == "Confirm"
        # someone else pressing the button (a forwarded id) is refused, and that request stays unconfirmed
        refused = await press(bob, note["buttons"][0]["id"])
        assert refused["text"] == "Confirmation refused: only alice, who asked, can confirm it."

        await answer(alice, "/wipe", kind="progress")
        await alice.wait_for(lambda f: len([n for n in f.get("buttons", []) if n["action"] == "confirm"]) == 1
                             and f is not note)
        button = confirm_button(alice)
        assert (await press(alice, button))["text"] == "Confirmed: /wipe."
        await alice.wait_for(lambda f: f["type"] == "reply" and f["text"] == "wiped by alice")
        again = await press(alice, button)  # the same button twice: the signed button is single-use
        assert again["type"] == "error" and "already pressed" in again["message"]
        assert [e["reason"] for e in await audit(engine, "confirmation.refused")] == [
            "only alice, who asked, can confirm it"]
        assert len(await audit(engine, "confirmation.confirmed")) == 1
        states = await runs(engine, "wipe")
        assert [s for s, _ in states] == ["CONFIRM", "REPORT_RESULT"]


async def test_confirmation_by_another_admin_refusals_and_expiry(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, CONFIRM_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave, \
            ChatClient.connect(chat_url(engine), ERIN_TOKEN) as erin:
        # request A: the requester and a viewer cannot confirm; then it expires
        msg = await alice.say("/drop")
        progress = await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f.get("state") == "CONFIRM")
        assert progress["detail"] == "waiting for another admin (dave, erin) to confirm within 1m"
        await dave.wait_for(lambda f: f["type"] == "notification")
        await erin.wait_for(lambda f: f["type"] == "notification")
        assert notes(alice, "drop") == []  # the requester gets no button she could not use
        assert (await press(alice, confirm_button(dave)))["text"] == \
            "Confirmation refused: it needs another admin, not the person who asked."
        assert (await press(bob, confirm_button(erin)))["text"] == \
            "Confirmation refused: confirming needs role admin, which bob does not have."
        await tick(engine, clock, 61)
        expired = await alice.wait_for(lambda f: f["type"] == "reply" and "expired" in f["text"])
        assert expired["text"] == "Not run: nobody confirmed /drop in time; the request expired."

        # request B: dave confirms; erin's press comes second
        await answer(alice, "/drop", kind="progress")
        await dave.wait_for(lambda f: len(notes(dave, "drop")) == 2)
        await erin.wait_for(lambda f: len(notes(erin, "drop")) == 2)
        assert (await press(dave, confirm_button(dave)))["text"] == "Confirmed: /drop."
        await alice.wait_for(lambda f: f["type"] == "reply" and f["text"] == "dropped")
        assert any(f["type"] == "reply" and f["text"] == "dave confirmed /drop." for f in alice.frames)
        assert (await press(erin, confirm_button(erin)))["text"] == \
            "Confirmation refused: already confirmed by dave."

        # request C: a press after the window
        await answer(alice, "/drop", kind="progress")
        await dave.wait_for(lambda f: len(notes(dave, "drop")) == 3)
        await tick(engine, clock, 61)
        assert (await press(dave, confirm_button(dave)))["text"] == \
            "Confirmation refused: the confirmation window has passed."
        reasons = [e["reason"] for e in await audit(engine, "confirmation.refused")]
        assert reasons == ["it needs another admin, not the person who asked",
                           "confirming needs role admin, which bob does not have",
                           "already confirmed by dave", "the confirmation window has passed"]
        assert len(await audit(engine, "confirmation.expired")) == 2
        assert [e["actor"] for e in await audit(engine, "confirmation.confirmed")] == ["dave"]
        assert [s for s, _ in await runs(engine, "drop")] == ["SKIPPED", "REPORT_RESULT", "SKIPPED"]


async def test_a_confirmation_survives_a_restart_and_resumes_the_rebuilt_run(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, CONFIRM_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await answer(alice, "/drop", kind="progress")
        await dave.wait_for(lambda f: f["type"] == "notification")
        button = confirm_button(dave)
    async with engine_for(config, CONFIRM_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        assert (await press(dave, button))["text"] == "Confirmed: /drop."
        # the old conversation is gone with the restart: alice hears it in her sessions instead
        await alice.wait_for(lambda f: f["type"] == "reply" and f["text"] == "dave confirmed /drop.")
        await settle(engine)
        assert [s for s, _ in await runs(engine, "drop")] == ["REPORT_RESULT"]


async def test_a_pending_confirmation_of_a_changed_rule_is_cancelled(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, CONFIRM_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await answer(alice, "/drop", kind="progress")
        await dave.wait_for(lambda f: f["type"] == "notification")
        old = engine.runtime.graph
        new, teams = compile_rules(config, CONFIRM_RULES.replace('reply "dropped"', 'reply "dropped!"'))
        engine.runtime.swap_graph(new, {})
        await engine.stateful.on_graph_swapped(old, new)
        told = await dave.wait_for(lambda f: f["type"] == "reply" and "cancelled" in f["text"])
        assert told["text"] == "The confirmation for /drop was cancelled: rule drop changed."
        assert (await press(dave, confirm_button(dave)))["text"] == \
            "Confirmation refused: the request was cancelled because its rule changed."


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


async def test_an_overdue_timer_fires_once_on_start(config: Config) -> None:
    clock = ManualClock(START)
    rules = ESCALATE_RULES.replace("{after}", "15m")
    async with engine_for(config, rules, clock) as engine:
        await post_alert(engine, "WhileDown")
        await settle(engine)
        clock.advance(3600)  # Herald is down for an hour
        for _ in range(2):
            async with engine_for(config, rules, clock) as engine:
                for _ in range(100):
                    if await audit(engine, "escalation.sent"):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                assert len(await audit(engine, "escalation.sent")) == 1
                assert [t for t in await engine.timers.pending() if t.kind == "escalate"] == []


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
