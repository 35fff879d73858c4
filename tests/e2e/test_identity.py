"""One identity across accounts: an unlinked chat account can only /help, /whoami and /link; a one-time token from
`herald identity link` binds it to a person; replays, expired tokens and unlinking behave."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from engine.cli.main import main as herald
from engine.core.config import Config
from engine.security import identity
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import chat_url

DEVICE = "my-laptop-secret-0123456789"
OTHER_DEVICE = "other-phone-secret-9876543210"


def _link_token(config_file: Path, principal: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert herald(["identity", "link", principal, "--config", str(config_file)]) == 0
    match = re.search(r"^/link (\S+)$", capsys.readouterr().out, re.MULTILINE)
    assert match, "herald identity link printed no /link line"
    return match.group(1)


async def _ask(client: ChatClient, text: str) -> str:
    msg = await client.say(text)
    frame = await client.wait_for(lambda f: f["type"] in ("reply", "result") and f.get("in_reply_to") == msg)
    return str(frame["text"])


async def test_an_unlinked_account_links_once_with_a_one_time_token(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ChatClient.connect(chat_url(engine), DEVICE, rooms=["ops"]) as device:
        assert device.welcome["principal"] is None and device.welcome["account"].startswith("dev-")
        assert "not linked" in await _ask(device, "/whoami")
        assert (await _ask(device, "/backup now")).startswith("Denied: /backup needs an account linked to a person")
        assert await _ask(device, "/help") == "You can run: /help, /link, /whoami."

        token = _link_token(config_file, "alice", capsys)
        assert await _ask(device, f"/link {token}") == \
            "Linked: this chat account now acts for alice (roles: admin)."
        assert (await _ask(device, "/whoami")).startswith("You are alice (roles: admin)")
        assert await _ask(device, "/help") == "You can run: /backup, /cancel, /help, /link, /task, /whoami."

        async with ChatClient.connect(chat_url(engine), OTHER_DEVICE) as other:
            assert await _ask(other, f"/link {token}") == "Link refused: already used."
            assert "not linked" in await _ask(other, "/whoami")

    audit = await engine.db.call(lambda c: c.execute("SELECT action, actor, data FROM audit_log").fetchall())
    assert token not in json.dumps([tuple(row) for row in audit])  # the token itself is never audited
    actions = [(row["action"], row["actor"]) for row in audit]
    assert ("identity.linked", "alice") in actions and ("identity.link_issued", "cli") in actions
    assert any(a == "identity.link_refused" for a, _ in actions)


async def test_unlinking_takes_effect_at_once(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ChatClient.connect(chat_url(engine), DEVICE) as device:
        await _ask(device, f"/link {_link_token(config_file, 'bob', capsys)}")
        assert (await _ask(device, "/whoami")).startswith("You are bob")
        assert herald(["identity", "unlink", "bob", "--config", str(config_file)]) == 0
        assert "not linked" in await _ask(device, "/whoami")


async def test_expired_forged_and_misdirected_link_tokens_are_refused(engine: Engine) -> None:
    from engine.security import keys

    expired, _ = await engine.db.call(identity.issue_link_token, "alice", -5)
    api_token, _ = await engine.db.call(keys.issue, sub="alice", purpose="api", ttl_s=60)
    async with ChatClient.connect(chat_url(engine), DEVICE) as device:
        assert await _ask(device, f"/link {expired}") == "Link refused: token expired."
        assert await _ask(device, f"/link {expired[:-4]}AAAA") == "Link refused: token is invalid " \
            "(Signature verification failed)."
        assert await _ask(device, f"/link {api_token}") == "Link refused: token is not for link."
        assert "not linked" in await _ask(device, "/whoami")


async def test_an_unlinked_account_in_a_team_room_gets_no_notifications(engine: Engine) -> None:
    from engine.cli.client import alert_payload
    from tests.integrations.test_webhook import _post

    async with ChatClient.connect(chat_url(engine), DEVICE, rooms=["ops"]) as device, \
            ChatClient.connect(chat_url(engine), "alice-chat-token-0123456789") as alice:
        payload = alert_payload({"severity": "critical", "service": "database"}, summary="x", resolved=False)
        status, _ = await _post(engine, json.dumps(payload).encode())
        assert status == 200
        await alice.wait_for(lambda f: f["type"] == "notification")
        assert await _ask(device, "/whoami")  # a round trip after the notification went out
    assert not any(f["type"] == "notification" for f in device.frames)


async def test_a_device_account_is_refused_unless_the_config_turns_them_on(config: Config) -> None:
    """A mistyped token is not an anonymous account by default (issue 18 item 10)."""
    async with running_engine(config.model_copy(update={"integrations": {}})) as engine:
        with pytest.raises(PermissionError, match="unknown token .device accounts are off"):
            async with ChatClient.connect(chat_url(engine), DEVICE):
                pass
        events = await engine.db.call(lambda c: c.execute("SELECT count(*) AS n FROM events").fetchone())
    assert events["n"] == 0


async def test_an_unlinked_account_is_rate_limited_until_it_is_linked(
        engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with ChatClient.connect(chat_url(engine), DEVICE) as device:
        sent = [await device.say("/whoami") for _ in range(12)]
        answers = [await device.wait_for(lambda f, m=m: f.get("in_reply_to") == m) for m in sent]
        limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
        assert 5 <= len(answers) - len(limited) <= 6 and "/link it to act for someone" in limited[0]["message"]
        events = await engine.db.call(lambda c: c.execute("SELECT count(*) AS n FROM events").fetchone())
        assert events["n"] == len(answers) - len(limited)  # a refused frame is neither journaled nor audited

        await asyncio.sleep(2.1)  # the allowance refills: the link goes through, and the limit is gone
        assert (await _ask(device, f"/link {_link_token(config_file, 'alice', capsys)}")).startswith("Linked")
        more = [await device.say("/whoami") for _ in range(12)]
        replies = [await device.wait_for(lambda f, m=m: f.get("in_reply_to") == m) for m in more]
    assert all(r["type"] == "reply" and r["text"].startswith("You are alice") for r in replies)


async def test_rooms_are_joined_only_by_people_with_a_room_role(config: Config) -> None:
    """By default only admins and operators join rooms (issue 18 item 10): bob, a viewer, is told which rooms he was
    refused and does not see what is posted there; alice, an admin, does."""
    from engine.testing.conformance import post_alert
    from tests.support import ALICE_TOKEN, BOB_TOKEN

    async with running_engine(config.model_copy(update={"integrations": {}})) as engine, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as bob, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        assert bob.welcome["rooms"] == [] and bob.welcome["refused_rooms"] == ["ops"]
        assert "needs a linked person with role admin or operator" in bob.welcome["rooms_note"]
        assert alice.welcome["rooms"] == ["ops"] and "refused_rooms" not in alice.welcome
        await post_alert(engine, "DiskFull")
        await alice.wait_for(lambda f: f["type"] == "notification")
        assert await _ask(bob, "/whoami")  # a round trip after the notification went out
    assert not any(f["type"] == "notification" for f in bob.frames)
