"""Slack end to end against a fake Slack on loopback (tests/connectors/slack_server.py): the conformance kit in
Socket Mode and in HTTP mode (with real v0 signatures), in one engine with Herald's own chat, plus what is particular
to Slack: signatures refused, a re-delivered envelope handled once, token rotation mid-run and across a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config
from engine.plugin import (
    Button,
    IntegrationContext,
    Message,
    RateLimited,
    Rejected,
    Unavailable,
    Unload,
    discover,
)
from engine.security import identity
from engine.testing import running_engine
from engine.testing.conformance import Shown, check_connector, eventually, post_alert
from integrations.slack import integration as slack
from integrations.slack import render
from integrations.slack.config import SlackConfig
from integrations.slack.connector import parse_address
from integrations.slack.tokens import Tokens
from integrations.slack.web import SlackWeb
from tests.connectors.slack_server import SlackServer, sign


class SlackDriver:
    """The conformance kit's view of Slack: people type slash commands, write messages, press buttons."""

    platform = "slack"
    admin = "U0ADMIN01"
    viewer = "U0VIEWER1"
    room = "C0OPSROOM"

    def __init__(self, server: SlackServer) -> None:
        self.server = server

    def direct_chat(self, account: str) -> str:
        return "D" + account[1:]  # the app's DM with this member (where a slash command there is answered)

    async def say(self, account: str, chat: str, text: str) -> None:
        if text.startswith("/"):  # Slack's client sends a typed slash command as a command, not a message
            command, _, rest = text.partition(" ")
            await self.server.slash(account, chat, command, rest)
        else:
            await self.server.event_message(account, chat, text)

    async def press(self, account: str, chat: str, message: Shown, label: str) -> None:
        [posted] = [m for m in self.server.in_chat(chat) if m.ts == message.id]
        value = next(v for shown_label, v in message.buttons if shown_label == label)
        await self.server.block_action(account, posted, value)

    async def shown(self, chat: str) -> list[Shown]:
        return [Shown(id=m.ts, text=m.shown_text(), buttons=m.buttons(), edits=m.edits)
                for m in self.server.in_chat(chat)]

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        self.server.rate_limit_next(retry_after_s)

    async def drop_inbound(self) -> None:
        if self.server.mode == "socket":
            await self.server.drop_sockets()
        else:
            self.server.lose_answers(1)  # Slack never hears the 200, and retries an event


class Located:
    """The Slack integration, telling the fake Slack where Herald listens (HTTP mode's Request URL)."""

    def __init__(self, server: SlackServer) -> None:
        self.manifest = slack.manifest
        self._server = server

    async def setup(self, ctx: IntegrationContext) -> Unload:
        self._server.request_base = lambda: f"http://127.0.0.1:{ctx.port}"  # type: ignore[attr-defined]
        return await slack.setup(ctx)


@pytest.fixture
async def server() -> AsyncIterator[SlackServer]:
    fake = SlackServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def socket_config(server: SlackServer) -> dict[str, Any]:
    return {"bot_token": server.bot_token, "app_token": server.app_token, "api_url": server.api_url}


def http_config(server: SlackServer) -> dict[str, Any]:
    return {"bot_token": server.bot_token, "signing_secret": server.signing_secret, "api_url": server.api_url}


# -- the conformance kit -------------------------------------------------------------------------------------------

async def test_slack_is_installed_and_needs_its_section() -> None:
    [found] = [i for i in discover() if i.manifest.name == "slack"]
    assert found.manifest.needs_config and found.manifest.connector is not None


async def test_socket_mode_passes_the_conformance_kit(tmp_path: Path, server: SlackServer) -> None:
    await check_connector(tmp_path, slack, SlackDriver(server), socket_config(server))
    assert server.connections >= 2  # the kit's dropped socket was replaced
    assert not server.unacked  # every envelope was acknowledged


async def test_http_mode_passes_the_conformance_kit(tmp_path: Path, server: SlackServer) -> None:
    server.mode = "http"
    await check_connector(tmp_path, Located(server), SlackDriver(server), http_config(server))  # type: ignore[arg-type]
    assert ("commands", 200) in server.deliveries and ("interactivity", 200) in server.deliveries


# -- one engine, for the tests below -------------------------------------------------------------------------------

RULES = """\
on alert notify ops with buttons
on message matching /disk (is )?full/ reply "Try /backup files."
"""


def _config(tmp_path: Path, integration: dict[str, Any]) -> Config:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "ops.rules").write_text(RULES)
    return Config.model_validate({
        "data_dir": "data", "rules_dir": "rules", "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": ["slack:U0ADMIN01"]},
                       "dave": {"roles": ["viewer"]}},
        "teams": {"ops": {"targets": ["slack:C0OPSROOM"]}},
        "integrations": {"slack": integration},
    }).resolved(tmp_path)


def _texts(server: SlackServer, chat: str) -> list[str]:
    return [m.shown_text() for m in server.in_chat(chat)]


async def _journaled_commands(engine: Any) -> int:
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT COUNT(*) AS n FROM events WHERE body LIKE '%\"command\"%help%'").fetchone())
    return int(rows["n"])


# -- HTTP mode: signatures -----------------------------------------------------------------------------------------

async def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{port}/hooks/slack/{path}", data=body, headers=headers) as answer:
        return answer.status, await answer.text()


async def test_http_mode_refuses_a_bad_or_stale_signature_and_answers_url_verification(
        tmp_path: Path, server: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    form = b"command=%2Fhelp&text=&user_id=U0ADMIN01&channel_id=D0ADMIN01&trigger_id=1.2.3&response_url=x"
    async with running_engine(_config(tmp_path, http_config(server)), integrations=discover()) as engine:
        now = int(time.time())
        forged = sign("not-the-secret", now, form)
        assert (await _post(engine.port, "commands", form, forged))[0] == 401
        stale = sign(server.signing_secret, now - 301, form)
        assert (await _post(engine.port, "commands", form, stale))[0] == 401
        assert (await _post(engine.port, "commands", form, {}))[0] == 401
        tampered = sign(server.signing_secret, now, form)
        assert (await _post(engine.port, "commands", form.replace(b"help", b"hack"), tampered))[0] == 401
        challenge = json.dumps({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                                "type": "url_verification"}).encode()
        status, text = await _post(engine.port, "events", challenge, sign(server.signing_secret, now, challenge))
        assert status == 200 and json.loads(text)["challenge"].startswith("3eZbrw")
        assert await _journaled_commands(engine) == 0  # nothing refused was journaled
    refusals = [r for r in caplog.records if r.name == "herald.slack" and "refused /hooks/slack" in r.message]
    assert len(refusals) == 4 and all(r.levelname == "WARNING" for r in refusals)
    assert any("stale" in r.message for r in refusals) and any("bad signature" in r.message for r in refusals)


# -- Socket Mode: re-delivery, disconnect --------------------------------------------------------------------------

async def test_an_envelope_redelivered_after_a_reconnect_is_handled_once(tmp_path: Path, server: SlackServer) -> None:
    async with running_engine(_config(tmp_path, socket_config(server)), integrations=discover()) as engine:
        await eventually(lambda: _true(server.connections == 1), "the Socket Mode connection")
        server.hold_acks = True  # every ack is lost with the socket
        await server.slash("U0ADMIN01", "D0ADMIN01", "/help", "")
        ts = await server.event_message("U0ADMIN01", "C0OPSROOM", "<@U0BOTUSER> hello there", mention=True)

        async def answered() -> list[str]:
            return [t for t in _texts(server, "D0ADMIN01") if t.startswith("You can run:")]

        await eventually(answered, "the answer to /help")
        assert len(server.unacked) == 3
        server.hold_acks = False
        await server.drop_sockets()
        await eventually(lambda: _true(server.connections == 2 and not server.unacked), "re-delivery and acks")
        await server.send_disconnect()  # Slack refreshing the connection: a new one, nothing lost
        await eventually(lambda: _true(server.connections == 3), "the reconnect after `disconnect`")
        await asyncio.sleep(0.5)
        assert len(await answered()) == 1, "the re-delivered /help was answered twice"
        assert await _journaled_commands(engine) == 1
        messages = await engine.db.call(lambda c: c.execute(
            "SELECT COUNT(*) AS n FROM events WHERE body LIKE '%hello there%'").fetchone())
        assert messages["n"] == 1, "the message and its app_mention (and their re-deliveries) are one event"
    assert ts


async def _true(value: bool) -> bool:
    return value


# -- identity ------------------------------------------------------------------------------------------------------

async def test_an_account_links_itself_with_the_herald_slash_command(tmp_path: Path, server: SlackServer) -> None:
    async with running_engine(_config(tmp_path, socket_config(server)), integrations=discover()) as engine:
        token, _ = await engine.db.call(identity.issue_link_token, "dave", 600)
        await server.slash("U0DAVE001", "D0DAVE001", "/herald", f"link {token}")
        await eventually(lambda: _true(any(t.startswith("Linked") for t in _texts(server, "D0DAVE001"))),
                         "the answer to /herald link")
        await server.slash("U0DAVE001", "D0DAVE001", "/herald", "whoami")
        await eventually(lambda: _true(any(t.startswith("You are") for t in _texts(server, "D0DAVE001"))),
                         "the answer to /herald whoami")
    answers = [m for m in server.in_chat("D0DAVE001")]
    assert all(m.ephemeral_for == "U0DAVE001" for m in answers)  # only dave saw them
    texts = [m.shown_text() for m in answers]
    assert "Linked: this slack account now acts for dave (roles: viewer)." in texts
    assert "You are dave (roles: viewer) on slack account U0DAVE001." in texts


# -- token rotation ------------------------------------------------------------------------------------------------

def rotating_config(server: SlackServer, refresh_token: str) -> dict[str, Any]:
    return {"app_token": server.app_token, "api_url": server.api_url, "client_id": server.client_id,
            "client_secret": server.client_secret, "refresh_token": refresh_token}


async def test_a_token_that_expires_mid_run_is_refreshed_without_losing_a_message_and_survives_a_restart(
        tmp_path: Path, server: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = server.issue_refresh_token()
    config = _config(tmp_path, rotating_config(server, first))
    async with running_engine(config, integrations=discover()) as engine:
        await post_alert(engine, "BeforeExpiry")
        await eventually(lambda: _true(any("BeforeExpiry" in t for t in _texts(server, "C0OPSROOM"))), "alert 1")
        assert server.refreshes == [first]  # the configured refresh token, used once at start
        server.expire_access_tokens()
        await post_alert(engine, "AfterExpiry")
        await eventually(lambda: _true(any("AfterExpiry" in t for t in _texts(server, "C0OPSROOM"))), "alert 2")
        assert server.token_errors == ["token_expired"] and len(server.refreshes) == 2
    # The configured refresh token is spent: a restart must use the stored pair (and its live access token).
    async with running_engine(config, integrations=discover()) as engine:
        await post_alert(engine, "AfterRestart")
        await eventually(lambda: _true(any("AfterRestart" in t for t in _texts(server, "C0OPSROOM"))), "alert 3")
        server.expire_access_tokens()
        await post_alert(engine, "AfterSecondExpiry")
        await eventually(lambda: _true(any("AfterSecondExpiry" in t for t in _texts(server, "C0OPSROOM"))),
                         "alert 4")
    assert first not in server.refreshes[1:], "the spent refresh token was presented again"
    assert len(server.refreshes) == 3 and server.token_errors == ["token_expired", "token_expired"]
    for name in ("BeforeExpiry", "AfterExpiry", "AfterRestart", "AfterSecondExpiry"):
        assert sum(name in t for t in _texts(server, "C0OPSROOM")) == 1
    secrets = [*server.refreshes, *server.issued_access, server.client_secret, server.app_token]
    leaked = [s for s in secrets if s in caplog.text]
    assert not leaked, "a token reached the logs"


# -- messages in channels --------------------------------------------------------------------------------------

async def test_channel_messages_and_mentions_reach_on_message_rules_once(tmp_path: Path, server: SlackServer) -> None:
    async with running_engine(_config(tmp_path, socket_config(server)), integrations=discover()):
        await eventually(lambda: _true(server.connections == 1), "the Socket Mode connection")
        await server.event_message("U0ADMIN01", "C0OPSROOM", "<@U0BOTUSER> the disk is full", mention=True)
        await server.event_message("U0VIEWER1", "C0OPSROOM", "all fine here")

        async def replied() -> list[str]:
            return [t for t in _texts(server, "C0OPSROOM") if t == "Try /backup files."]

        await eventually(replied, "the rule's reply in the channel")
        await asyncio.sleep(0.5)
        assert len(await replied()) == 1
        [reply] = [m for m in server.in_chat("C0OPSROOM") if m.shown_text() == "Try /backup files."]
        assert reply.ephemeral_for is None  # an answer to a message is for the channel


def test_a_notification_is_block_kit_with_a_colour_bar_and_a_text_fallback() -> None:
    message = Message(kind="notification", text="Disk <full> & more", title="db1", severity="critical",
                      fields=(("service", "database"),),
                      buttons=(Button(handle="h1", label="Acknowledge", action="ack"),))
    body = render.payload(message)
    assert body["text"] == "db1\nDisk &lt;full&gt; &amp; more"
    [attachment] = body["attachments"]
    assert attachment["color"] == "#d62728" and "blocks" not in body
    kinds = [b["type"] for b in attachment["blocks"]]
    assert kinds == ["header", "section", "section", "actions"]
    [button] = attachment["blocks"][-1]["elements"]
    assert button["value"] == button["action_id"] == "h1"
    assert "attachments" not in render.payload(Message(kind="reply", text="ok"))


# -- config, addresses, rendering ----------------------------------------------------------------------------------

def test_addresses_are_slack_ids() -> None:
    assert parse_address("C012AB3CD") == "C012AB3CD" and parse_address("U0ADMIN01") == "U0ADMIN01"
    for bad in ("#ops", "c012ab3cd", "C", "X012AB3CD"):
        with pytest.raises(ValueError, match="channel id"):
            parse_address(bad)


def test_the_config_needs_a_way_in_and_whole_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="signing_secret is required"):
        SlackConfig.model_validate({"bot_token": "xoxb-1"})
    with pytest.raises(ValueError, match="together"):
        SlackConfig.model_validate({"bot_token": "xoxb-1", "app_token": "xapp-1", "client_id": "1.2"})
    with pytest.raises(ValueError, match="bot_token is required"):
        SlackConfig.model_validate({"app_token": "xapp-1"})
    monkeypatch.setenv("SLACK_BOT", "xoxb-from-env")
    secret = tmp_path / "app"
    secret.write_text("xapp-from-file\n")
    secret.chmod(0o600)
    config = SlackConfig.model_validate({"bot_token_env": "SLACK_BOT", "app_token_file": str(secret)})
    assert config.secret("bot_token") == "xoxb-from-env" and config.secret("app_token") == "xapp-from-file"
    assert config.socket_mode and config.api_url == "https://slack.com/api/"


def test_the_config_sections_in_the_platform_doc_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import tomllib

    doc = (Path(__file__).parents[2] / "docs" / "platforms" / "slack.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_CLIENT_SECRET", "SLACK_REFRESH_TOKEN"):
        monkeypatch.setenv(name, "x-" + name.lower())
    for block in blocks:
        section = tomllib.loads(block)["integrations"]["slack"]
        assert SlackConfig.model_validate(section).socket_mode
    for key in SlackConfig.model_fields:  # every setting is documented
        assert f"`{key.removesuffix('_env').removesuffix('_file')}" in doc, key


class _NoStore:
    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        return None


async def test_web_api_failures_are_classified_for_the_outbox(server: SlackServer) -> None:
    async with aiohttp.ClientSession() as http:
        ctx: Any = SimpleNamespace(http=http)

        def web(token: str) -> SlackWeb:
            tokens = Tokens(bot_token=token, rotation=None, store=_NoStore(), refresh_before_s=0,
                            oauth_client=lambda: None)  # type: ignore[arg-type,return-value]
            return SlackWeb(ctx, api_url=server.api_url, tokens=tokens)

        good = web(server.bot_token)
        answer = await good.call("chat.postMessage", {"channel": "U0ADMIN01", "text": "hi"})
        assert answer["channel"] == "D0ADMIN01"  # a member id lands in their DM
        with pytest.raises(Rejected, match="channel_not_found"):
            await good.call("chat.postMessage", {"channel": "C0MISSING", "text": "hi"})
        server.rate_limit_next(7)
        with pytest.raises(RateLimited) as limited:
            await good.call("chat.postMessage", {"channel": "C0OPSROOM", "text": "hi"})
        assert limited.value.retry_after_s == 7
        with pytest.raises(Rejected, match="bot token was refused") as refused:
            await web("xoxb-revoked").call("chat.postMessage", {"channel": "C0OPSROOM", "text": "hi"})
        assert "xoxb-revoked" not in str(refused.value)
        await server.stop()
        with pytest.raises(Unavailable):
            await good.call("chat.postMessage", {"channel": "C0OPSROOM", "text": "hi"})


async def test_an_http_event_retried_while_and_after_it_is_handled_is_one_event(
        tmp_path: Path, server: SlackServer) -> None:
    server.mode = "http"
    async with running_engine(_config(tmp_path, http_config(server)), integrations=discover()) as engine:
        event = {"token": "t", "team_id": "T0HERALD", "api_app_id": "A0HERALD", "type": "event_callback",
                 "event_id": "Ev0001", "event_time": int(time.time()),
                 "event": {"type": "message", "user": "U0ADMIN01", "text": "the disk is full", "channel": "C0OPSROOM",
                           "ts": f"{time.time():.6f}", "channel_type": "channel"}}
        body = json.dumps(event).encode()

        async def deliver(retry: int) -> int:
            headers = {"Content-Type": "application/json", **sign(server.signing_secret, int(time.time()), body)}
            if retry:
                headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
            return (await _post(engine.port, "events", body, headers))[0]

        assert await asyncio.gather(deliver(0), deliver(1)) == [200, 200]
        assert await deliver(2) == 200
        await eventually(lambda: _true("Try /backup files." in _texts(server, "C0OPSROOM")), "the rule's reply")
        await asyncio.sleep(0.5)
        assert _texts(server, "C0OPSROOM").count("Try /backup files.") == 1


async def test_a_refresh_that_fails_is_loud_and_the_message_waits(
        tmp_path: Path, server: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path, rotating_config(server, "xoxe-1-revoked"))
    async with running_engine(config, integrations=discover()) as engine:
        await post_alert(engine, "WhileRevoked")

        async def complained() -> bool:
            return any(r.levelname == "ERROR" and "invalid_refresh_token" in r.getMessage()
                       for r in caplog.records if r.name == "herald.slack")

        await eventually(complained, "an error saying the refresh failed")
        assert not any("WhileRevoked" in t for t in _texts(server, "C0OPSROOM"))
    assert "xoxe-1-revoked" not in caplog.text
