"""A chat session's frames are read ahead of the engine: a client that sends many commands without waiting gets
every ack and every answer, in the order it sent them, and a bad frame in the middle is refused in its place."""

from __future__ import annotations

import json

from engine.core.config import Config
from engine.testing import ChatClient
from tests.e2e.stateful.support import engine_for
from tests.support import ALICE_TOKEN, chat_url

RULES = 'on command echo <word: word> reply "echo {command.word}"\n'


async def test_commands_sent_back_to_back_are_acked_and_answered_in_order(config: Config) -> None:
    async with engine_for(config, RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        sent = [await alice.say(f"/echo w{n}") for n in range(60)]
        await alice.ws.send("{not json")
        sent.append(await alice.say("/echo last"))
        await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == sent[-1], timeout=60)
        events = await engine.db.call(lambda c: [json.loads(r[0])["data"]["args"] for r in c.execute(
            "SELECT body FROM events WHERE kind = 'command' ORDER BY id")])

    acks = [f["id"] for f in alice.frames if f["type"] == "ack"]
    assert acks == sent
    replies = [(f["in_reply_to"], f["text"]) for f in alice.frames if f["type"] == "reply"]
    assert replies == [(cid, f"echo w{n}") for n, cid in enumerate(sent[:-1])] + [(sent[-1], "echo last")]
    [refusal] = [f for f in alice.frames if f["type"] == "error"]
    assert refusal["code"] == "bad_request" and "not valid JSON" in refusal["message"]
    order = [f.get("id") if f["type"] == "ack" else "error" for f in alice.frames if f["type"] in ("ack", "error")]
    assert order == sent[:-1] + ["error", sent[-1]]  # the refusal comes in its place
    assert events == [[f"w{n}"] for n in range(60)] + [["last"]]  # journaled once each, in order


async def test_a_frame_with_a_lone_surrogate_is_refused_alone_and_its_neighbours_are_handled(config: Config) -> None:
    async with engine_for(config, RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        before = await alice.say("/echo before")
        await alice.ws.send('{"type": "message", "id": "bad", "text": "/echo \\ud800"}')  # valid JSON, unstorable
        after = await alice.say("/echo after")
        await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == after, timeout=30)
    [refusal] = [f for f in alice.frames if f["type"] == "error"]
    assert refusal["code"] == "bad_request" and "surrogate" in refusal["message"]
    replies = [(f["in_reply_to"], f["text"]) for f in alice.frames if f["type"] == "reply"]
    assert replies == [(before, "echo before"), (after, "echo after")]
