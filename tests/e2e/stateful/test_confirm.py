"""`require confirmation [by another ROLE] within D` (issue 6) through a real engine and real chat clients."""

from __future__ import annotations

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.testing import ChatClient
from tests.e2e.stateful.support import (
    DAVE_TOKEN,
    ERIN_TOKEN,
    START,
    answer,
    audit,
    compile_rules,
    engine_for,
    notes,
    press,
    runs,
    settle,
    tick,
)
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url

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
        assert (refused["code"], refused["message"]) == (
            "button_refused", "button refused: only alice, who asked, can confirm it")  # checked before it is spent

        await answer(alice, "/wipe", kind="progress")
        await alice.wait_for(lambda f: len([n for n in f.get("buttons", []) if n["action"] == "confirm"]) == 1
                             and f is not note)
        button = confirm_button(alice)
        assert (await press(alice, button))["text"] == "Confirmed: /wipe."
        await alice.wait_for(lambda f: f["type"] == "reply" and f["text"] == "wiped by alice")
        again = await press(alice, button)  # the same button twice: the signed button is single-use
        assert again["type"] == "error" and "already pressed" in again["message"]
        assert [e["reason"] for e in await audit(engine, "button.refused")] == [
            "only alice, who asked, can confirm it", "this button was already pressed"]
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
        assert (await press(alice, confirm_button(dave)))["message"] == \
            "button refused: it needs another admin, not the person who asked"
        assert (await press(bob, confirm_button(erin)))["message"] == \
            "button refused: confirming needs role admin, which bob does not have"
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
        assert (await press(erin, confirm_button(erin)))["message"] == \
            "button refused: already confirmed by dave"

        # request C: a press after the window
        await answer(alice, "/drop", kind="progress")
        await dave.wait_for(lambda f: len(notes(dave, "drop")) == 3)
        await tick(engine, clock, 61)
        assert (await press(dave, confirm_button(dave)))["message"] == \
            "button refused: the confirmation window has passed"
        reasons = [e["reason"] for e in await audit(engine, "button.refused")]
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
        assert (await press(dave, confirm_button(dave)))["message"] == \
            "button refused: the request was cancelled because its rule changed"


async def test_a_rate_limit_refuses_before_anyone_is_asked_to_confirm(config: Config) -> None:
    """The docs' order (`require confirmation` written before `at most`): the limit is checked first, so nobody
    confirms a run that is then refused, and the wait reads as people write it."""
    rules = ('rule purge:\n  on command purge\n  require role admin\n  require confirmation within 1m\n'
             '  at most 1 per 1h\n  reply "purged"\n')
    clock = ManualClock(START)
    async with engine_for(config, rules, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await answer(alice, "/purge", kind="progress")
        await alice.wait_for(lambda f: len(notes(alice, "purge")) == 1)
        assert (await press(alice, confirm_button(alice)))["text"] == "Confirmed: /purge."
        await alice.wait_for(lambda f: f["type"] == "reply" and f["text"] == "purged")
        await tick(engine, clock, 180 + 1)
        refused = await answer(alice, "/purge")
        assert refused["text"] == "Not run: rate limited (at most 1 per 1h), try again in 57m."
        assert len(notes(alice, "purge")) == 1  # no second Confirm button was sent
        assert [s for s, _ in await runs(engine, "purge")] == ["REPORT_RESULT", "SKIPPED"]
