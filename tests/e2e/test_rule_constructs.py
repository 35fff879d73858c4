"""Rule-language constructs run through the engine with real events over real connections: typed arguments,
templates, custom buttons and `on button`, `emit`/`on event`, `on message`, `when` conditions, `check disk`,
script arguments from templates, `on task`, and teams declared in rule files."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url, http_url

RULES = r'''
rule deploy:
  on command deploy <env: prod|staging> [<delay: duration = 0s>]
  require role admin
  reply "deploying to {command.env} after {command.delay}s by {command.user}"

on command note <words: text> reply "noted: {command.words}"
rule prod-alerts:
  on alert when alert.labels.env = prod
  notify ops saying "{alert.service} is {alert.severity} in prod" with buttons ack, retry

on button retry require role admin reply "retrying {button.alert_fingerprint}"
on command ship require role admin emit shipped
on event shipped reply "shipped by {event.user}"
on message matching /^hello\b/ reply "hi {message.user}"
on command big require role admin check disk "/" has 999999tb free run backup.sh
on command echo <first: word> <rest: text> require role admin run echo.sh args "{command.first}" "{command.rest}"
on task echo.sh succeeded reply "echo finished: {task.status} {task.exit_code}"
on command noisy require role admin run noisy.sh
on task noisy.sh failed reply "stderr: {task.stderr_tail}"
on task noisy.sh failed reply "stdout: {task.stdout_tail}"
team people = @bob
on command page require role admin notify people saying "paged by {command.user}"
'''


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    (config.rules_dir / "constructs.rules").write_text(RULES)
    echo = config.scripts_dir / "echo.sh"
    echo.write_text('#!/bin/sh\nfor a in "$@"; do echo "arg=[$a]"; done\n')
    os.chmod(echo, 0o755)
    noisy = config.scripts_dir / "noisy.sh"
    noisy.write_text('#!/bin/sh\necho out-1\necho err-1 >&2\necho out-2\necho err-2 >&2\nexit 3\n')
    os.chmod(noisy, 0o755)
    async with running_engine(config) as engine:
        yield engine


async def _answers(client: ChatClient, text: str, *, until: str = "reply") -> list[dict]:
    msg = await client.say(text)
    await client.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == until, timeout=60)
    return [f for f in client.frames if f.get("in_reply_to") == msg]


def _texts(frames: list[dict], kind: str = "reply") -> list[str]:
    return [f["text"] for f in frames if f["type"] == kind]


async def test_typed_arguments_are_bound_or_rejected(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        assert _texts(await _answers(alice, "/deploy staging 2m")) == ["deploying to staging after 120.0s by alice"]
        assert _texts(await _answers(alice, "/deploy prod")) == ["deploying to prod after 0.0s by alice"]
        rejected = _texts(await _answers(alice, "/deploy qa"))
        assert len(rejected) == 1 and rejected[0].startswith("Rejected:") and "prod" in rejected[0]
        assert _texts(await _answers(alice, "/note the disk; is $(full)")) == ["noted: the disk; is $(full)"]


async def test_alert_condition_template_custom_buttons_and_a_button_rule(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        async with aiohttp.ClientSession() as session:
            for env in ("staging", "prod"):
                payload = alert_payload({"severity": "warning", "service": "web", "env": env}, summary="s",
                                        resolved=False)
                async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                    assert response.status == 200
        note = await alice.wait_for(lambda f: f["type"] == "notification")
        assert note["text"] == "web is warning in prod"
        assert [(b["label"], b["action"]) for b in note["buttons"]] == [("Acknowledge", "ack"), ("Retry", "retry")]
        retry = next(b["id"] for b in note["buttons"] if b["action"] == "retry")
        press = await alice.press(retry)
        reply = await alice.wait_for(lambda f: f.get("in_reply_to") == press and f["type"] == "reply")
        assert reply["text"].startswith("retrying ")
        msg = await bob.say("/whoami")
        await bob.wait_for(lambda f: f.get("in_reply_to") == msg)
    assert len([f for f in alice.frames if f["type"] == "notification"]) == 1  # the staging alert matched nothing


async def test_emit_raises_an_event_that_another_rule_answers(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/ship")
        reply = await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
    assert reply["text"] == "shipped by alice"
    rows = await engine.db.call(lambda c: c.execute("SELECT body FROM events WHERE kind = 'event'").fetchall())
    [emitted] = [json.loads(r["body"]) for r in rows]
    assert emitted["data"]["name"] == "shipped" and emitted["cause"]["depth"] == 1


async def test_messages_and_disk_checks(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        assert _texts(await _answers(alice, "hello there")) == ["hi alice"]
        assert _texts(await _answers(alice, "what is this")) == ["I only understand commands, like /help."]
        frames = await _answers(alice, "/big")
    assert [f["state"] for f in frames if f["type"] == "progress"][-1] == "SKIPPED"
    assert _texts(frames)[0].startswith("Not run: not enough disk space: / has ")
    assert await engine.tasks.recent(5) == []


async def test_script_arguments_from_templates_and_the_task_trigger(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        frames = await _answers(alice, "/echo one two; $(three)", until="result")
        result = next(f for f in frames if f["type"] == "result")
        follow_up = await alice.wait_for(lambda f: f["type"] == "reply" and "echo finished" in f["text"])
    assert result["ok"] and result["output"].splitlines() == ["arg=[one]", "arg=[two; $(three)]"]
    assert follow_up["text"] == "echo finished: succeeded 0"


async def test_task_stderr_tail_holds_only_stderr_and_stdout_tail_only_stdout(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        frames = await _answers(alice, "/noisy", until="result")
        result = next(f for f in frames if f["type"] == "result")
        stderr = await alice.wait_for(lambda f: f["type"] == "reply" and f["text"].startswith("stderr:"))
        stdout = await alice.wait_for(lambda f: f["type"] == "reply" and f["text"].startswith("stdout:"))
    assert sorted(result["output"].splitlines()) == ["err-1", "err-2", "out-1", "out-2"]  # the chat sees both
    assert stderr["text"].split() == ["stderr:", "err-1", "err-2"]
    assert stdout["text"].split() == ["stdout:", "out-1", "out-2"]


async def test_a_team_declared_in_a_rule_file_reaches_its_person(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        await _answers(alice, "/page", until="result")
        note = await bob.wait_for(lambda f: f["type"] == "notification")
    assert note["text"] == "paged by alice"
    assert not any(f["type"] == "notification" for f in alice.frames)


async def test_help_for_one_command_shows_its_usage_and_who_may_run_it(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        assert _texts(await _answers(alice, "/help deploy")) == [
            "/deploy <env: prod|staging> [<delay: duration = 0s>]: needs role admin (you may run it)."]
        assert _texts(await _answers(bob, "/help /deploy")) == [
            "/deploy <env: prod|staging> [<delay: duration = 0s>]: needs role admin (you lack admin)."]
        assert _texts(await _answers(bob, "/help note")) == [
            "/note <words: text>: anyone linked to a person may run it."]
        assert _texts(await _answers(alice, "/help big")) == [
            '/big: needs role admin (you may run it); before it runs: check disk "/" has 999999t free.']
        cancel = _texts(await _answers(alice, "/help cancel"))[0]
        assert cancel.startswith("/cancel TASK_ID: stop a task you started")
        unknown = _texts(await _answers(alice, "/help nothing"))[0]
        assert unknown.startswith("There is no command /nothing. You can run:")


async def test_a_run_without_a_script_ends_with_a_result_after_its_reply(engine: Engine) -> None:
    """docs/chat-protocol.md: the reply frame, then a result with what each action did and no task."""
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        frames = await _answers(bob, "/note the disk is fine", until="result")
    kinds = [f["type"] for f in frames if f["type"] in ("reply", "result")]
    assert kinds == ["reply", "result"]
    result = frames[-1]
    assert (result["ok"], result["text"], result["task"], result["exit_code"], result["output"]) == \
        (True, "replied", None, None, "")
    assert [f["state"] for f in frames if f["type"] == "progress"][-1] == "REPORT_RESULT"
