"""Buttons are signed: a forged, altered, expired or replayed press is refused (and audited) over real chat."""

from __future__ import annotations

import base64
import json
import time

import pytest

from engine.security import keys
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, chat_url


async def _button(engine: Engine, **overrides: object) -> str:
    payload = {"r": "rules/ops.rules:4", "e": "01EVENT", "a": "ack", "g": None, "f": "abc123",
               "x": int(time.time()) + 60, "n": "nonce1"} | overrides
    return await engine.db.call(keys.sign_value, payload)


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
    button = await _button(engine)
    first = await _press(engine, button)
    assert first["type"] == "ack"
    again = await _press(engine, button)
    assert again["type"] == "error" and again["message"] == "button refused: this button was already pressed"


@pytest.mark.parametrize(("make", "reason"), [
    (lambda b: _tamper(b, a="mute", g="1h"), "signature does not match"),       # altered action
    (lambda b: _tamper(b, x=int(time.time()) + 10**6), "signature does not match"),  # extended expiry
    (lambda b: b.rsplit(".", 1)[0] + ".AAAA", "signature does not match"),      # forged MAC
    (lambda b: "unknownkid." + b.split(".", 1)[1], "unknown key"),               # another key
])
async def test_forged_or_altered_buttons_are_refused_and_audited(engine: Engine, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    answer = await _press(engine, make(await _button(engine)))
    assert answer["type"] == "error" and reason in answer["message"]
    refused = await engine.db.call(
        lambda c: c.execute("SELECT actor, data FROM audit_log WHERE action = 'button.refused'").fetchall())
    assert [(r["actor"], reason in json.loads(r["data"])["reason"]) for r in refused] == [("alice", True)]


async def test_an_expired_button_is_refused(engine: Engine) -> None:
    answer = await _press(engine, await _button(engine, x=int(time.time()) - 1))
    assert answer["type"] == "error" and answer["message"] == "button refused: this button has expired"
