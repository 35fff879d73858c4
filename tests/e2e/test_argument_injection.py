"""Option and path injection through command arguments, sent as a chat user would: a leading '-' (`--flag`, `-rf`,
`--output=/etc/passwd`) in a word, text or untyped argument, and a '..' path segment, are rejected with a reason
before anything runs, unless the command's spec accepts options (`<x: option>`, or a negative `int`). Words are
split by plain spaces only: NBSP, NEL and U+2028 are refused instead of splitting words invisibly, and so are bidi
controls such as U+202E; text is normalised to NFC."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url

RULES = r'''
on command grep <w: word> require role admin run echo.sh args "{command.w}"
on command say <words: text> require role admin run echo.sh args "{command.words}"
on command greet <who: user> require role admin run echo.sh args "{command.who}"
on command raw require role admin run echo.sh
on command opt <flag: option> require role admin reply "flag {command.flag}"
on command nudge <by: int> require role admin reply "by {command.by}"
on command echo-back <words: text> require role admin reply "[{command.words}]"
'''


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    (config.rules_dir / "injection.rules").write_text(RULES)
    echo = config.scripts_dir / "echo.sh"
    echo.write_text('#!/bin/sh\nfor a in "$@"; do echo "arg=[$a]"; done\n')
    os.chmod(echo, 0o755)
    async with running_engine(config) as engine:
        yield engine


async def _answer(client: ChatClient, text: str) -> str:
    """The reply or error that ends the exchange: 'Rejected: ...', an error frame's message, or a reply."""
    msg = await client.say(text)
    frame = await client.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] in ("reply", "error"))
    return str(frame.get("text") or frame.get("message"))


async def _tasks(engine: Engine) -> int:
    return int(await engine.db.call(lambda c: c.execute("SELECT count(*) FROM tasks").fetchone()[0]))


OPTION = "may not start with '-'"
DOTS = "may not contain '..' as a path segment"


@pytest.mark.parametrize(("text", "reason"), [
    ("/grep --flag", f"w {OPTION}"),
    ("/grep -rf", f"w {OPTION}"),
    ("/say --output=/etc/passwd", f"words {OPTION}"),
    ("/say -rf /", f"words {OPTION}"),
    ("/greet @-rf", f"who {OPTION}"),
    ("/raw -rf", f"argument '-rf' {OPTION}"),
    ("/raw a/../../etc/passwd", f"argument 'a/../../etc/passwd' {DOTS}"),
    ("/grep a/../../etc/passwd", f"w {DOTS}"),
    ("/grep ..", f"w {DOTS}"),
    ("/say see ../../etc/shadow", f"words {DOTS}"),
    ("/opt --out=../x", f"flag {DOTS}"),
])
async def test_option_and_path_injection_is_rejected_before_anything_runs(
    engine: Engine, text: str, reason: str
) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        answer = await _answer(alice, text)
    assert answer.startswith("Rejected: ") and reason in answer, answer
    assert await _tasks(engine) == 0


@pytest.mark.parametrize(("char", "name"), [
    ("\u00a0", "U+00A0 NO-BREAK SPACE"),
    ("\u0085", "U+0085"),
    ("\u2028", "U+2028 LINE SEPARATOR"),
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
])
async def test_unicode_separators_and_bidi_controls_are_refused(engine: Engine, char: str, name: str) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        answer = await _answer(alice, f"/grep abc{char}def")
    assert name in answer, answer
    assert await _tasks(engine) == 0


async def test_what_the_spec_allows_still_works_and_text_is_nfc(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        assert await _answer(alice, "/opt --dry-run") == "flag --dry-run"
        assert await _answer(alice, "/nudge -5") == "by -5"
        assert await _answer(alice, "/echo-back cafe\u0301 a-b x..y\tz") == "[caf\u00e9 a-b x..y z]"
        assert await _answer(alice, "/echo-back don't - stop") == "[don't - stop]"
