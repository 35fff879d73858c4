"""Buttons reach platforms as short handles bound on the server to a signed binding: an unknown handle, an altered
binding, an expired press is refused (and audited) over real chat, and so is a replay of a rule's button. The
alert-state buttons (Acknowledge, Unacknowledge, Mute) are not used up, so an alert can go back and forth; what they
do is idempotent, and every press of one passes every check again."""

from __future__ import annotations

import base64
import json
import time

import pytest

from engine.core.config import Config
from engine.security import keys
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import eventually
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url

HANDLE = "handle-1"


async def _button(engine: Engine, **overrides: object) -> str:
    """A button as make_buttons stores it: the signed binding on the server, the handle to the platform."""
    payload = {"r": "rules/ops.rules:4", "e": "01EVENT", "a": "ack", "g": None, "f": "abc123",
               "x": int(time.time()) + 60, "n": HANDLE} | overrides
    binding = await engine.db.call(keys.sign_value, payload)
    await _store(engine, binding)
    return binding


async def _store(engine: Engine, binding: str) -> None:
    await engine.db.write(lambda c: c.execute(
        "INSERT OR REPLACE INTO button_handles (handle, binding, expires) VALUES (?, ?, ?)",
        (HANDLE, binding, int(time.time()) + 60)))


def _tamper(button_id: str, **changes: object) -> str:
    kid, body, mac = button_id.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) | changes
    new_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{kid}.{new_body}.{mac}"


async def _press(engine: Engine, button_id: str) -> dict:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        press = await alice.press(button_id)
        return await alice.wait_for(lambda f: f.get("in_reply_to") == press or f.get("id") == press)


async def test_a_genuine_button_works_once_and_a_replay_is_refused(engine: Engine) -> None:
    """A rule's button (here `retry`, of an alert's notification) is used up by its first press."""
    await _button(engine, a="retry")
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        first = await alice.press(HANDLE)
        assert (await alice.wait_for(lambda f: f.get("id") == first))["type"] == "ack"
        again = await alice.press(HANDLE)
        refused = await alice.wait_for(lambda f: f.get("in_reply_to") == again)
    assert refused["type"] == "error" and refused["message"] == "button refused: this button was already pressed"


@pytest.mark.parametrize(("make", "reason"), [
    (lambda b: _tamper(b, a="mute", g="1h"), "signature does not match"),       # altered action
    (lambda b: _tamper(b, x=int(time.time()) + 10**6), "signature does not match"),  # extended expiry
    (lambda b: b.rsplit(".", 1)[0] + ".AAAA", "signature does not match"),      # forged MAC
    (lambda b: "unknownkid." + b.split(".", 1)[1], "unknown key"),               # another key
])
async def test_altered_bindings_are_refused_and_audited(engine: Engine, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Whoever could change the handle table still cannot change what a button does: the binding is signed."""
    await _store(engine, make(await _button(engine)))
    answer = await _press(engine, HANDLE)
    assert answer["type"] == "error" and reason in answer["message"]
    refused = await engine.db.call(
        lambda c: c.execute("SELECT actor, data FROM audit_log WHERE action = 'button.refused'").fetchall())
    assert [(r["actor"], reason in json.loads(r["data"])["reason"]) for r in refused] == [("alice", True)]


async def test_an_expired_button_is_refused(engine: Engine) -> None:
    await _button(engine, x=int(time.time()) - 1)
    answer = await _press(engine, HANDLE)
    assert answer["type"] == "error" and answer["message"] == "button refused: this button has expired"


async def _alert_buttons(engine: Engine, client: ChatClient, name: str) -> dict[str, str]:
    from engine.testing.conformance import post_alert

    await post_alert(engine, name)
    note = await client.wait_for(lambda f: f["type"] == "notification" and name in f["text"])
    return {b["action"]: b["id"] for b in note["buttons"]}


async def test_a_press_by_someone_without_the_role_is_refused_audited_and_leaves_the_button(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as bob:
        buttons = await _alert_buttons(engine, bob, "DiskFull")
        pid = await bob.press(buttons["ack"])
        refused = await bob.wait_for(lambda f: f.get("in_reply_to") == pid, timeout=10)
        assert refused["code"] == "button_refused"
        assert refused["message"] == "button refused: Acknowledge needs role admin or operator, which bob does not have"
        taken = await alice.press(buttons["ack"])  # bob's refused press did not use the button up
        assert (await alice.wait_for(lambda f: f.get("id") == taken))["type"] == "ack"

    async def acknowledged() -> object:
        return await engine.db.call(lambda c: c.execute(
            "SELECT acknowledged_by FROM alert_state WHERE fingerprint = 'fp-DiskFull'").fetchone())

    row = await eventually(acknowledged, "alice's acknowledgement")
    refusals = await engine.db.call(lambda c: c.execute(
        "SELECT actor FROM audit_log WHERE action = 'button.refused'").fetchall())
    assert row["acknowledged_by"] == "alice" and [r["actor"] for r in refusals] == ["bob"]


async def test_a_rule_on_a_built_in_button_tightens_who_may_press_it(config: Config) -> None:
    (config.rules_dir / "mute.rules").write_text("on button mute require role admin reply \"muted\"\n")
    people = {**config.principals, "bob": config.principals["bob"].model_copy(update={"roles": ["operator"]})}
    async with running_engine(config.model_copy(update={"principals": people})) as engine, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as bob:
        buttons = await _alert_buttons(engine, bob, "Noisy")
        pid = await bob.press(buttons["mute"])  # an operator may mute by default; this rule says admins only
        refused = await bob.wait_for(lambda f: f.get("in_reply_to") == pid, timeout=10)
        pid = await bob.press(buttons["ack"])  # Acknowledge is not tightened
        acked = await bob.wait_for(lambda f: f.get("id") == pid, timeout=10)
    assert refused["code"] == "button_refused" and "Mute requires role admin" in refused["message"]
    assert acked["type"] == "ack"


async def test_only_the_people_a_notification_was_sent_to_may_press_its_buttons(config: Config) -> None:
    """Team ops is alice alone (no room): bob, an operator, learned a handle of her notification and presses it
    from his own chat. He is refused, and the button still works for alice."""
    people = {**config.principals, "bob": config.principals["bob"].model_copy(update={"roles": ["operator"]})}
    teams = {"ops": config.teams["ops"].model_copy(update={"chat_rooms": []})}
    async with running_engine(config.model_copy(update={"principals": people, "teams": teams})) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        buttons = await _alert_buttons(engine, alice, "DiskFull")
        pid = await bob.press(buttons["ack"])
        refused = await bob.wait_for(lambda f: f.get("in_reply_to") == pid, timeout=10)
        assert refused["code"] == "button_refused"
        assert refused["message"] == ("button refused: Acknowledge: this notification was not sent to bob (only its "
                                      "recipients may press its buttons)")
        taken = await alice.press(buttons["ack"])
        assert (await alice.wait_for(lambda f: f.get("id") == taken))["type"] == "ack"
        refusals = await engine.db.call(lambda c: c.execute(
            "SELECT actor FROM audit_log WHERE action = 'button.refused'").fetchall())
    assert [r["actor"] for r in refusals] == ["bob"]


async def _answer(client: ChatClient, button: str) -> dict:
    pid = await client.press(button)
    return await client.wait_for(lambda f: f.get("in_reply_to") == pid and f["type"] in ("reply", "error"), timeout=10)


async def _acked_by(engine: Engine, fingerprint: str) -> object:
    row = await engine.db.call(lambda c: c.execute(
        "SELECT acknowledged_by FROM alert_state WHERE fingerprint = ?", (fingerprint,)).fetchone())
    return None if row is None else row["acknowledged_by"]


async def test_alert_state_buttons_are_not_used_up_and_their_presses_are_idempotent_and_checked(
        engine: Engine) -> None:
    """Acknowledge twice: the second says who has it. Bob, a viewer, may not unacknowledge (refused, audited, the
    alert stays acknowledged). Alice unacknowledges; pressing Unacknowledge again says the alert is open."""
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as bob:
        buttons = await _alert_buttons(engine, alice, "DiskFull")
        assert set(buttons) == {"ack", "mute"}  # Unacknowledge is not shown before an acknowledgement
        assert (await _answer(alice, buttons["ack"]))["text"] == "Acknowledged by alice."
        assert (await _answer(alice, buttons["ack"]))["text"] == "Already acknowledged by alice."
        edit = await alice.wait_for(lambda f: f["type"] == "notification_edit")
        unack = next(b["id"] for b in edit["buttons"] if b["action"] == "unack")

        refused = await _answer(bob, unack)
        assert refused["message"] == ("button refused: Unacknowledge needs role admin or operator, which bob does "
                                      "not have")
        assert await _acked_by(engine, "fp-DiskFull") == "alice"

        answer = await _answer(alice, unack)
        assert answer["text"] == "Unacknowledged by alice (was acknowledged by alice); the alert is open again."
        assert await _acked_by(engine, "fp-DiskFull") is None
        again = await _answer(alice, unack)
        assert again["text"] == "Not acknowledged: the alert is open already, there is nothing to unacknowledge."
    await engine.db.flush()
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT action, actor FROM audit_log WHERE action IN ('button.refused', 'alert.unacknowledged') "
        "ORDER BY seq").fetchall())
    assert [(r["action"], r["actor"]) for r in rows] == [("button.refused", "bob"), ("alert.unacknowledged", "alice")]


async def test_a_rule_on_the_unack_button_tightens_who_may_unacknowledge(config: Config) -> None:
    """Operators may acknowledge and unacknowledge by default; `on button unack require role admin` leaves them
    acknowledging only."""
    (config.rules_dir / "unack.rules").write_text("on button unack require role admin reply \"taken back\"\n")
    people = {**config.principals, "bob": config.principals["bob"].model_copy(update={"roles": ["operator"]})}
    async with running_engine(config.model_copy(update={"principals": people})) as engine, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as bob:
        buttons = await _alert_buttons(engine, bob, "Sticky")
        assert (await _answer(bob, buttons["ack"]))["text"] == "Acknowledged by bob."
        edit = await bob.wait_for(lambda f: f["type"] == "notification_edit")
        refused = await _answer(bob, next(b["id"] for b in edit["buttons"] if b["action"] == "unack"))
        assert refused["type"] == "error" and "Unacknowledge requires role admin" in refused["message"]
        assert await _acked_by(engine, "fp-Sticky") == "bob"
