"""Escalation policies (issue 19): several steps, then a repeat until acknowledged, through a real engine whose
clock the tests move; each step audited and shown on the alert's messages; durable across a restart."""

from __future__ import annotations

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.e2e.stateful.support import (
    DAVE_TOKEN,
    START,
    audit,
    drain,
    engine_for,
    notes,
    post_alert,
    press,
    settle,
    tick,
)
from tests.support import ALICE_TOKEN, chat_url

GRACE_S = 2.0  # long enough for a client to connect after the start, even on a loaded machine
POLICY_RULES = '''
team managers = @dave

rule policy:
  on alert from db
  notify ops saying "db {alert.summary}" with buttons ack
  escalate to ops after 5m, to managers after 15m, repeat every 30m until acknowledged
'''


def _escalations(client: ChatClient) -> list[str]:
    """How late each escalation this client got says it is: "after 15m" from "Escalated: not acknowledged after
    15m: <the alert>"."""
    return [n["text"].split(": ")[1].removeprefix("not acknowledged ") for n in notes(client, "policy")
            if n["text"].startswith("Escalated")]


async def test_steps_then_repeats_until_acknowledged(config: Config) -> None:
    clock = ManualClock(START)  # 12:00 UTC
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await post_alert(engine, "DiskFull")
        await alice.wait_for(lambda f: f["type"] == "notification")
        await post_alert(engine, "DiskFull")  # a repeated firing keeps the policy where it is
        await settle(engine)
        await tick(engine, clock, 4 * 60)
        await drain(alice)
        assert _escalations(alice) == []

        await tick(engine, clock, 61)  # step 1: ops, at 5m
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"].startswith("Escalated"))
        assert _escalations(alice) == ["after 5m"]
        await alice.wait_for(lambda f: f["type"] == "notification_edit"
                             and "Escalated to ops at 12:05 UTC" in f["text"])

        await tick(engine, clock, 10 * 60)  # step 2: managers, at 15m
        await dave.wait_for(lambda f: f["type"] == "notification")
        await alice.wait_for(lambda f: f["type"] == "notification_edit"
                             and "⏫ Escalated to managers at 12:15 UTC" in f["text"])
        for _ in range(2):  # the last step again every 30m: at 45m, at 1h15m
            await tick(engine, clock, 30 * 60)
        await dave.wait_for(lambda f: len(_escalations(dave)) == 3)
        assert _escalations(dave) == ["after 15m",
                                      "after 45m",
                                      "after 1h15m"]
        await alice.wait_for(lambda f: f["type"] == "notification_edit"
                             and "Escalated to managers at 13:15 UTC, 3 times" in f["text"])

        last = notes(dave, "policy")[-1]
        ack = next(b["id"] for b in last["buttons"] if b["action"] == "ack")
        assert (await press(dave, ack))["text"] == "Acknowledged by dave."
        await tick(engine, clock, 30 * 60)
        await tick(engine, clock, 30 * 60)
        await drain(dave)
        assert len(_escalations(dave)) == 3  # the acknowledgement stopped it

        sent = await audit(engine, "escalation.sent")
        assert [(e["target"], e["step"], e.get("repeat")) for e in sent] == [
            ("ops", 1, None), ("managers", 2, None), ("managers", 2, 1), ("managers", 2, 2)]
        [skipped] = await audit(engine, "escalation.skipped")
        assert skipped["reason"] == "acknowledged by dave" and skipped["repeat"] == 3
        assert [t for t in await engine.timers.pending() if t.kind == "escalate"] == []


async def test_a_resolved_alert_ends_its_policy(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await post_alert(engine, "Flappy")
        await settle(engine)
        await post_alert(engine, "Flappy", resolved=True)
        await tick(engine, clock, 16 * 60)
        await drain(dave)
        assert _escalations(dave) == []
        [skipped] = await audit(engine, "escalation.skipped")
        assert skipped["reason"] == "resolved" and skipped["step"] == 1


async def test_the_policy_goes_on_across_a_restart_and_catches_up_once(config: Config) -> None:
    """Step 1 before the restart; Herald is down an hour, through step 2 and a repeat: after the start grace
    step 2 goes out once (not a burst of missed repeats), then the repeat keeps its rhythm until acknowledged."""
    clock = ManualClock(START)
    config = config.model_copy(update={"start_grace_s": GRACE_S})
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "Outage")
        await settle(engine)
        await tick(engine, clock, 5 * 60 + 1)
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"].startswith("Escalated"))
        await settle(engine)
    clock.advance(3600)  # down from 12:05 to 13:05
    async with engine_for(config, POLICY_RULES, clock) as engine:
        await settle(engine)  # the engine has done what it does at start; the escalation is held by the grace
        async with ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
            # Dave connects after the start, within the grace: the escalation that came due while Herald was down
            # reaches him live. Without the grace it would have gone out before anyone could hear it.
            frame = await dave.wait_for(lambda f: f["type"] == "notification", timeout=10)
            assert frame["text"].startswith("Escalated") and "replay" not in frame
            await tick(engine, clock, 60)
            await drain(dave)
            assert _escalations(dave) == ["after 15m"]
            await tick(engine, clock, 29 * 60)  # 30m after the catch-up
            await dave.wait_for(lambda f: len(_escalations(dave)) == 2)
            assert _escalations(dave)[1] == "after 1h35m"
            ack = next(b["id"] for b in notes(dave, "policy")[-1]["buttons"] if b["action"] == "ack")
            assert (await press(dave, ack))["text"] == "Acknowledged by dave."
            await tick(engine, clock, 31 * 60)
            await drain(dave)
            assert len(_escalations(dave)) == 2
            sent = await audit(engine, "escalation.sent")
            assert [(e["target"], e.get("repeat")) for e in sent] == [("ops", None), ("managers", None),
                                                                       ("managers", 1)]


async def test_a_timer_pending_from_before_policies_still_escalates(config: Config) -> None:
    """An escalation timer stored by an engine before policies existed holds one step as `target` and `after`; the
    one-step form keeps its fingerprint, so after the upgrade that timer is kept and fires as it would have."""
    rules = '''
team managers = @dave

rule old:
  on alert from db
  notify ops
  escalate to managers after 15m unless acknowledged
'''
    clock = ManualClock(START)
    async with engine_for(config, rules, clock) as engine:
        fingerprint = await post_alert(engine, "Legacy")
        await settle(engine)
        [timer] = [t for t in await engine.timers.pending() if t.kind == "escalate"]
        old_payload = {"rule": "old", "alert": fingerprint, "target": "managers", "event": timer.payload["event"],
                       "after": 900.0, "text": "Legacy", "severity": None}
        await engine.timers.schedule("escalate", timer.due, timer.key, old_payload)
    async with engine_for(config, rules, clock) as engine, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await tick(engine, clock, 15 * 60 + 1)
        await dave.wait_for(lambda f: f["type"] == "notification")
        await tick(engine, clock, 60 * 60)
        await drain(dave)
        assert [n["text"] for n in notes(dave, "old")] == ["Escalated: not acknowledged after 15m: Legacy"]
        assert [t for t in await engine.timers.pending() if t.kind == "escalate"] == []



async def _button(client: ChatClient, action: str) -> str:
    """The newest `action` button this client was shown for the alert (in a notification or an edit of one)."""
    frame = await client.wait_for(lambda f: f["type"] in ("notification", "notification_edit")
                                  and any(b["action"] == action for b in f["buttons"]))
    return str(next(b["id"] for b in frame["buttons"] if b["action"] == action))


async def _acknowledged_before_step_1(engine: Engine, clock: ManualClock, alice: ChatClient) -> str:
    """The alert Sticky, acknowledged by alice at once, then 12:06: step 1 skipped and the policy stopped there.
    Returns the Unacknowledge button she was shown."""
    await post_alert(engine, "Sticky")
    await settle(engine)
    assert (await press(alice, await _button(alice, "ack")))["text"] == "Acknowledged by alice."
    unack = await _button(alice, "unack")
    await tick(engine, clock, 6 * 60)
    return unack


async def test_an_unacknowledgement_resumes_the_policy_where_the_acknowledgement_stopped_it(config: Config) -> None:
    """Acknowledged at 12:06, so step 2 (managers, due 12:15) is skipped and the policy stops there. Unacknowledged
    at 12:20: step 2 comes due again its gap later (15m - 5m = 10m, at 12:30), then the repeat every 30m applies
    again, until the next acknowledgement."""
    clock = ManualClock(START)
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        await post_alert(engine, "Sticky")
        await settle(engine)
        ack = await _button(alice, "ack")
        await tick(engine, clock, 6 * 60)  # step 1, to ops
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"].startswith("Escalated"))
        assert (await press(alice, ack))["text"] == "Acknowledged by alice."
        unack = await _button(alice, "unack")
        await tick(engine, clock, 10 * 60)  # 12:16: step 2 was due at 12:15, skipped
        await drain(dave)
        assert _escalations(dave) == []
        assert [s["reason"] for s in await audit(engine, "escalation.skipped")] == ["acknowledged by alice"]

        await tick(engine, clock, 4 * 60)  # 12:20
        answer = await press(alice, unack)
        assert answer["text"] == ("Unacknowledged by alice (was acknowledged by alice); the alert is open again. "
                                  "Its escalation resumes: to managers at 2026-06-01T12:30:00+00:00.")
        await tick(engine, clock, 9 * 60)  # 12:29: not yet
        await drain(dave)
        assert _escalations(dave) == []
        await tick(engine, clock, 61)  # 12:30: step 2, to managers
        await dave.wait_for(lambda f: len(_escalations(dave)) == 1)
        await tick(engine, clock, 30 * 60)  # 13:00: the repeat applies again
        await dave.wait_for(lambda f: len(_escalations(dave)) == 2)

        assert (await press(alice, ack))["text"] == "Acknowledged by alice."  # the same button works again
        await tick(engine, clock, 31 * 60)
        await drain(dave)
        assert len(_escalations(dave)) == 2
        sent = await audit(engine, "escalation.sent")
        assert [(e["target"], e["step"], e.get("repeat")) for e in sent] == [
            ("ops", 1, None), ("managers", 2, None), ("managers", 2, 1)]
        [resumed] = await audit(engine, "escalation.resumed")
        assert (resumed["target"], resumed["step"], resumed["due"]) == ("managers", 2, "2026-06-01T12:30:00+00:00")


async def test_a_stopped_policy_survives_a_restart_and_resumes_after_it(config: Config) -> None:
    """Acknowledged before step 1 came due: step 1 is skipped and the policy stops there, across a restart; an
    unacknowledgement after the restart (with the same message's button) resumes it at step 1, 5m later."""
    clock = ManualClock(START)
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        unack = await _acknowledged_before_step_1(engine, clock, alice)
        [skipped] = await audit(engine, "escalation.skipped")
        assert skipped["step"] == 1
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), DAVE_TOKEN) as dave:
        answer = await press(alice, unack)
        assert answer["text"].endswith("Its escalation resumes: to ops at 2026-06-01T12:11:00+00:00.")
        await tick(engine, clock, 5 * 60 + 1)  # 12:11: step 1, to ops
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"].startswith("Escalated"))
        await tick(engine, clock, 10 * 60)  # 12:21: step 2, to managers, keeping its 10m after step 1
        await dave.wait_for(lambda f: len(_escalations(dave)) == 1)
        sent = await audit(engine, "escalation.sent")
        assert [(e["target"], e["step"]) for e in sent] == [("ops", 1), ("managers", 2)]


async def test_a_stopped_policy_whose_rule_changed_is_not_resumed(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, POLICY_RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        unack = await _acknowledged_before_step_1(engine, clock, alice)
    changed = POLICY_RULES.replace("to managers after 15m", "to managers after 20m")
    async with engine_for(config, changed, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        answer = await press(alice, unack)
        assert answer["text"] == "Unacknowledged by alice (was acknowledged by alice); the alert is open again."
        assert [t for t in await engine.timers.pending() if t.kind == "escalate"] == []
        reasons = [s["reason"] for s in await audit(engine, "escalation.skipped")]
        assert reasons == ["acknowledged by alice", "not resumed: the rule or its escalate clause changed since"]
