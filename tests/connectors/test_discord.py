"""Discord over the Gateway, against the fake Discord in discord_server.py (real HTTP and WebSocket on loopback).

The conformance kit runs twice: with commands typed as messages (`/backup now` read through MESSAGE_CONTENT) and
with the `/herald` slash command (interactions answered within 3 s, replies as edits of the original response).
Then the Gateway's own promises: a dropped connection resumed with its session and sequence, nothing lost or
doubled; INVALID_SESSION answered with a fresh IDENTIFY; a zombie connection (no HEARTBEAT_ACK) replaced; fatal
close codes not retried; and the REST side: a 429 on an edit waited out, spent buckets not called.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey
from pydantic import ValidationError

from engine.core.config import Config
from engine.plugin import (
    AddressError,
    Button,
    Conversation,
    LinkButton,
    Message,
    Rejected,
    discover,
    read_secret,
)
from engine.security import identity
from engine.testing import conformance, running_engine
from engine.testing.conformance import Shown, check_connector, eventually, kit_config, kit_engine, post_alert
from integrations.discord import gateway as gateway_module
from integrations.discord import integration
from integrations.discord.config import DiscordConfig
from integrations.discord.connector import DiscordConnector, parse_address
from integrations.discord.interactions import Interactions
from integrations.discord.rest import DiscordRest
from tests.connectors.discord_server import DiscordServer, Posted
from tests.connectors.support import MemoryStore

ADMIN, VIEWER, ROOM = "1100000000000000001", "1100000000000000002", "1200000000000000001"


def shown_text(message: Posted) -> str:
    """A message as a person reads it: its content, then its embed's title, description and fields."""
    parts = [message.content] if message.content else []
    for embed in message.embeds:
        parts += [embed.get("title") or "", embed.get("description") or ""]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields") or []]
    return "\n".join(p for p in parts if p)


class DiscordDriver:
    platform = "discord"
    admin, viewer, room = ADMIN, VIEWER, ROOM

    def __init__(self, server: DiscordServer, *, slash: bool) -> None:
        self.server = server
        self.slash = slash  # commands through /herald (interactions) rather than typed as messages
        server.guild_channel(ROOM)

    def direct_chat(self, account: str) -> str:
        return self.server.dm_channel(account)

    async def say(self, account: str, chat: str, text: str) -> None:
        if self.slash and text.startswith("/"):
            await self.server.slash(account, chat, text[1:])
        else:
            await self.server.say(account, chat, text)

    async def press(self, account: str, chat: str, message: Shown, label: str) -> None:
        payload = next(data for shown_label, data in message.buttons if shown_label == label)
        await self.server.press(account, message.id, payload)

    async def shown(self, chat: str) -> list[Shown]:
        return [Shown(id=m.id, text=shown_text(m), edits=m.edits,
                      buttons=[(b["label"], b["custom_id"]) for b in m.buttons if "custom_id" in b])
                for m in self.server.channel_messages(chat)]

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        self.server.rate_limit_next("create", retry_after_s)

    async def drop_inbound(self) -> None:
        await self.server.drop(4000)


def settings(server: DiscordServer, **extra: Any) -> dict[str, Any]:
    return {"token": server.token, "application_id": server.application_id, "api_url": server.api_url, **extra}


@pytest.fixture
async def discord() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


@pytest.fixture(autouse=True)
def quick_invalid_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "INVALID_SESSION_WAIT_S", (0.05, 0.1))  # Discord's 1-5 s, shortened


async def test_conformance_with_typed_commands(tmp_path: Path, discord: DiscordServer) -> None:
    await check_connector(tmp_path, integration, DiscordDriver(discord, slash=False), settings(discord))
    assert discord.repeats == 0 and discord.early_calls == 0
    assert discord.resumes and discord.resumes[-1]["path"] == "/resume", "the drop was not resumed"
    assert len(discord.identifies) == 1, "a resumable drop caused a fresh IDENTIFY"
    assert discord.identifies[0]["intents"] == (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)


async def test_conformance_with_the_slash_command(tmp_path: Path, discord: DiscordServer) -> None:
    await check_connector(tmp_path, integration, DiscordDriver(discord, slash=True), settings(discord))
    assert [c["name"] for c in discord.commands["global"]] == ["herald", "backup"]
    answered = [i for i in discord.interactions.values() if i.payload["type"] == 2]
    assert answered and all(i.response == 5 for i in answered), [i.response for i in answered]
    presses = [i for i in discord.interactions.values() if i.payload["type"] == 3]
    assert presses and all(i.response == 6 for i in presses)
    assert "POST /api/v10/webhooks/{app}/{token}" in discord.calls, "the result was not a follow-up"




def test_addresses_and_config_say_what_is_wrong(tmp_path: Path) -> None:
    assert parse_address(ROOM) == ROOM
    for bad in ("#ops", "12", "1200000000000000001/3", "general"):
        with pytest.raises(AddressError, match="Copy ID"):
            parse_address(bad)
    with pytest.raises(ValidationError, match="token is required"):
        DiscordConfig.model_validate({"application_id": "1"})
    with pytest.raises(ValidationError, match="set one of token, token_env"):
        DiscordConfig.model_validate({"application_id": "1", "token": "a", "token_env": "B"})
    with pytest.raises(ValidationError, match="64 hexadecimal"):
        DiscordConfig.model_validate({"application_id": "1", "token": "a", "public_key": "abc"})
    with pytest.raises(ValidationError, match="extra"):
        DiscordConfig.model_validate({"application_id": "1", "token": "a", "intents": 1})
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    secret.chmod(0o600)
    config = DiscordConfig.model_validate({"application_id": "1", "token_file": str(secret)})
    assert read_secret(config, "token") == "from-a-file" and "from-a-file" not in repr(config)


async def test_a_retried_send_is_not_doubled_and_messages_render_as_discord_shows_them(
        discord: DiscordServer) -> None:
    discord.guild_channel(ROOM)
    async with aiohttp.ClientSession() as http:
        rest = DiscordRest(http, discord.api_url, discord.token)
        store = MemoryStore()
        connector = DiscordConnector(rest, store, Interactions(rest, store, discord.application_id))
        message = Message(kind="notification", text="disk full on db1", title="DiskFull", severity="warning",
                          fields=(("host", "db1"),), buttons=(Button(handle="h1", label="Acknowledge", action="ack"),),
                          links=(LinkButton(label="Runbook", url="https://runbooks.example/disk"),))
        to = Conversation(platform="discord", chat=ROOM)
        first = await connector.send(to, message, key="outbox-key-1", seq=1)
        again = await connector.send(to, message, key="outbox-key-1", seq=1)  # a retry after a lost answer
        with pytest.raises(Rejected, match="10003 Unknown Channel"):
            await connector.send(Conversation(platform="discord", chat="9900000000000000001"), message, key="k2",
                                 seq=2)
    assert first == again and discord.repeats == 1 and len(discord.channel_messages(ROOM)) == 1
    [posted] = discord.channel_messages(ROOM)
    assert posted.embeds == [{"description": "disk full on db1", "color": 0xECB22E, "title": "DiskFull",
                              "fields": [{"name": "host", "value": "db1", "inline": True}]}]
    assert posted.buttons == [{"type": 2, "style": 1, "label": "Acknowledge", "custom_id": "h1"},
                              {"type": 2, "style": 5, "label": "Runbook", "url": "https://runbooks.example/disk"}]

# -- one engine with Discord, for the Gateway's and the REST side's own promises ------------------------------------


@asynccontextmanager
async def discord_engine(tmp_path: Path, server: DiscordServer, *, members: bool = False,
                         **extra: Any) -> AsyncIterator[Any]:
    server.guild_channel(ROOM)
    rules = Path(tempfile.mkdtemp(prefix="herald-discord-rules-", dir="/tmp"))
    (rules / "ops.rules").write_text("on alert notify ops with buttons\n")
    config = Config.model_validate({
        "data_dir": str(tmp_path / "data"), "rules_dir": str(rules), "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": [f"discord:{ADMIN}"]}, "dave": {"roles": ["viewer"]}},
        "teams": {"ops": {"targets": [f"discord:{ROOM}"], **({"members": ["alice"]} if members else {})}},
        "integrations": {"discord": settings(server, **extra)},
    }).resolved(tmp_path)
    try:
        async with running_engine(config, integrations=discover()) as engine:
            await eventually(lambda: _ready(server), "the bot's Gateway session")
            yield engine
    finally:
        shutil.rmtree(rules, ignore_errors=True)


async def _ready(server: DiscordServer) -> bool:
    return server.current is not None and server.current.ws is not None and not server.current.invalid


def replies_to(server: DiscordServer, message_id: str) -> list[Posted]:
    return [m for m in server.messages.values() if m.reference == message_id]


async def test_a_dropped_gateway_resumes_its_session_and_loses_or_doubles_nothing(
        tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        before = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, before), "an answer before the drop")
        session = discord.current
        assert session is not None and integration.gateway is not None

        async def caught_up() -> bool:  # the bot has handled everything, its own echoes included
            return integration.gateway is not None and integration.gateway.session.seq == session.seq

        await eventually(caught_up, "the bot to handle every dispatch")
        handled = session.seq
        await discord.drop(4000)
        missed = [await discord.say(ADMIN, ROOM, "/whoami") for _ in range(3)]  # while the bot is away
        for message_id in missed:
            await eventually(lambda m=message_id: _answered(discord, m), "an answer to a message sent while away")
        after = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, after), "an answer after the resume")
    [resume] = discord.resumes
    assert resume["session_id"] == session.id and resume["seq"] == handled and resume["path"] == "/resume"
    assert len(discord.identifies) == 1, "the drop cost a new session"
    assert all(len(replies_to(discord, m)) == 1 for m in [before, *missed, after]), "an event was doubled"


async def _answered(server: DiscordServer, message_id: str) -> bool:
    return bool(replies_to(server, message_id))


async def test_reconnect_opcode_resumes_on_a_new_connection(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        await discord.reconnect()

        async def resumed() -> bool:
            return bool(discord.resumes) and await _ready(discord)

        await eventually(resumed, "a RESUME after op 7")
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer on the resumed session")
    assert len(discord.identifies) == 1 and 4000 in discord.closes


async def test_invalid_session_is_answered_with_a_fresh_identify(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        first = discord.current
        await discord.invalidate()
        said = await discord.say(ADMIN, ROOM, "/whoami")  # waits for the next session, as Discord would not

        async def identified_again() -> bool:
            return len(discord.identifies) == 2 and discord.current is not first and await _ready(discord)

        await eventually(identified_again, "a second IDENTIFY after INVALID_SESSION")
        await eventually(lambda: _answered(discord, said), "an answer on the new session")
    assert discord.resumes == [], "an invalid session was resumed"


async def test_a_zombie_connection_is_closed_and_resumed(tmp_path: Path, discord: DiscordServer) -> None:
    discord.heartbeat_interval_ms = 300
    async with discord_engine(tmp_path, discord):
        await eventually(lambda: _count(discord.heartbeats, 2), "heartbeats")
        discord.acks = False  # heartbeats go unanswered: the bot must not trust the connection

        async def replaced() -> bool:
            return bool(discord.resumes) and len(discord.connections) == 2

        await eventually(replaced, "a new connection after a missed HEARTBEAT_ACK", timeout_s=10)
        discord.acks = True
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer on the new connection")
    assert 4000 in discord.closes, f"the zombie was closed with {discord.closes}, which ends the session"
    assert discord.resumes[0]["session_id"] in discord.sessions and len(discord.identifies) == 1


async def _count(items: list[Any], at_least: int) -> bool:
    return len(items) >= at_least


async def test_heartbeats_carry_the_sequence_and_keep_the_interval(tmp_path: Path, discord: DiscordServer) -> None:
    discord.heartbeat_interval_ms = 300
    async with discord_engine(tmp_path, discord):
        await eventually(lambda: _count(discord.heartbeats, 4), "a few heartbeats")
        session = discord.current
        assert session is not None
        times = [at for at, _ in discord.heartbeats]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.15 < gap < 0.9 for gap in gaps), gaps  # 0.3 s, with room for a loaded machine
    assert 0 <= times[0] - discord.hellos[0] < 0.6, "the first heartbeat is not within one jittered interval"
    assert all(seq is not None and 1 <= seq <= session.seq for _, seq in discord.heartbeats)


async def test_a_fatal_close_code_stops_the_gateway_with_a_reason(tmp_path: Path, discord: DiscordServer) -> None:
    discord.message_content_allowed = False  # MESSAGE_CONTENT not enabled in the Developer Portal: 4014
    rules = Path(tempfile.mkdtemp(prefix="herald-discord-rules-", dir="/tmp"))
    config = Config.model_validate({"data_dir": str(tmp_path / "data"), "rules_dir": str(rules), "http": {"port": 0},
                                    "integrations": {"discord": settings(discord)}}).resolved(tmp_path)
    try:
        async with running_engine(config, integrations=discover()):
            async def stopped() -> str | None:
                return integration.gateway.stopped if integration.gateway else None

            reason = await eventually(stopped, "the gateway to give up")
            assert "4014" in reason and "message_content = false" in reason
            assert discord.connections == ["/gateway"], "a fatal close code was retried"
    finally:
        shutil.rmtree(rules, ignore_errors=True)


async def test_without_message_content_the_bot_reads_direct_messages_and_slash_commands(
        tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord, message_content=False):
        assert not int(discord.identifies[0]["intents"]) & (1 << 15)
        dm = discord.dm_channel(ADMIN)
        said = await discord.say(ADMIN, dm, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer to a direct message")
        ignored = await discord.say(ADMIN, ROOM, "/whoami")  # arrives with empty content: nothing to read
        await discord.slash(ADMIN, ROOM, "whoami")

        async def slash_answered() -> list[Posted]:
            return [m for m in discord.channel_messages(ROOM) if m.interaction and "You are alice" in m.content]

        await eventually(slash_answered, "the answer to /herald whoami")
    assert replies_to(discord, ignored) == []


async def test_a_429_on_a_button_edit_is_waited_out(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord) as engine:
        await post_alert(engine, "EditLimited")

        async def note() -> list[Posted]:
            return [m for m in discord.channel_messages(ROOM) if "EditLimited" in shown_text(m)]

        [message] = await eventually(note, "the notification")
        discord.rate_limit_next("edit", 0.5)
        [ack] = [b["custom_id"] for b in message.buttons if b["label"] == "Acknowledge"]
        await discord.press(ADMIN, message.id, ack)

        async def edited() -> bool:
            return "Acknowledged by alice" in shown_text(message)

        await eventually(edited, "the edit after the 429")
    assert "PATCH /api/v10/channels/{channel}/messages/{message}" in discord.limited
    assert message.edits == 1 and [b["label"] for b in message.buttons] == ["Unacknowledge", "Mute 1h"]
    [press] = [i for i in discord.interactions.values() if i.payload["type"] == 3]
    assert press.response == 6  # DEFERRED_UPDATE_MESSAGE, then the edit


async def test_spent_buckets_wait_for_their_reset_and_a_global_429_is_waited_out(
        tmp_path: Path, discord: DiscordServer) -> None:
    discord.bucket_limit, discord.bucket_window_s = 2, 0.5
    async with discord_engine(tmp_path, discord) as engine:
        discord.rate_limit_next("create", 0.3, global_=True)
        for n in range(6):
            await post_alert(engine, f"Burst{n}")

        async def all_there() -> bool:
            texts = [shown_text(m) for m in discord.channel_messages(ROOM)]
            return all(sum(f"Burst{n}" in t for t in texts) == 1 for n in range(6))

        await eventually(all_there, "six notifications through a bucket of two")
    assert discord.early_calls == 0, "a call was made on a spent bucket"
    assert discord.limited == ["POST /api/v10/channels/{channel}/messages"] and discord.repeats == 0


async def test_a_person_is_notified_in_their_direct_messages(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord, members=True) as engine:
        await post_alert(engine, "ForAlice")
        dm = discord.dm_channel(ADMIN)

        async def in_dm() -> list[Posted]:
            return [m for m in discord.channel_messages(dm) if "ForAlice" in shown_text(m)]

        [note] = await eventually(in_dm, "the notification in alice's direct messages")
        assert note.embeds[0]["color"] == 0xE01E5A and [b["label"] for b in note.buttons] == ["Acknowledge", "Mute 1h"]
        await discord.press(ADMIN, note.id, note.buttons[0]["custom_id"])

        async def edited() -> bool:
            return "Acknowledged by alice" in shown_text(note)

        await eventually(edited, "the direct message edited after the press")


async def test_an_account_links_itself_by_direct_message_or_slash_command(
        tmp_path: Path, discord: DiscordServer) -> None:
    newcomer, other = "1100000000000000003", "1100000000000000004"
    async with discord_engine(tmp_path, discord) as engine:
        token, _ = await engine.db.call(identity.issue_link_token, "dave", 600)
        dm = discord.dm_channel(newcomer)
        said = await discord.say(newcomer, dm, f"/link {token}")
        await eventually(lambda: _answered(discord, said), "the answer to /link")
        assert replies_to(discord, said)[0].content.startswith("Linked")

        token, _ = await engine.db.call(identity.issue_link_token, "dave", 600)
        await discord.slash(other, ROOM, f"link {token}")

        async def linked() -> list[Posted]:
            return [m for m in discord.channel_messages(ROOM) if m.content.startswith("Linked")]

        [answer] = await eventually(linked, "the answer to /herald link")
    assert answer.flags & 64, "a link token's answer was shown to the whole channel"


async def _session_stored(discord: DiscordServer) -> None:
    """The fake counts a session ready once it has sent READY; the engine stores it once it has handled READY. An
    answer to a later message shows it has (a stop in between identifies afresh next time, as it should)."""
    said = await discord.say(ADMIN, ROOM, "/whoami")
    await eventually(lambda: _answered(discord, said), "an answer before the restart")


async def test_an_engine_restart_resumes_the_stored_session(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        session = discord.current
        await _session_stored(discord)
    async with discord_engine(tmp_path, discord):
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer after the restart")
    assert session is not None and [r["session_id"] for r in discord.resumes] == [session.id]
    assert len(discord.identifies) == 1


async def test_a_spent_session_start_limit_is_waited_out(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        discord.spend_session_starts(reset_after_ms=800)
        await discord.invalidate()  # a new session is needed, and none may start for 0.8 s

        async def identified_again() -> bool:
            return len(discord.identifies) == 2 and await _ready(discord)

        await eventually(identified_again, "an IDENTIFY once the limit reset")
    assert discord.early_identifies == 0, "IDENTIFY was sent with no session starts left"


async def test_a_restart_whose_session_is_gone_identifies_afresh(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        first = discord.current
        await _session_stored(discord)
    assert first is not None
    first.invalid = True  # Discord forgot it meanwhile: the RESUME is answered with INVALID_SESSION
    async with discord_engine(tmp_path, discord):
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer on the new session")
    assert [r["session_id"] for r in discord.resumes] == [first.id] and len(discord.identifies) == 2


async def test_a_refused_command_is_answered_where_it_was_given(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        typed = await discord.say(ADMIN, ROOM, "/backup\u200bnow")  # a hidden character: refused, with why
        await eventually(lambda: _answered(discord, typed), "the refusal of a typed command")
        assert "U+200B" in replies_to(discord, typed)[0].content
        slashed = await discord.slash(ADMIN, ROOM, "backup\u200bnow")

        async def refused() -> bool:
            return discord.interactions[slashed].response == 4

        await eventually(refused, "the refusal of a slash command")
    [answer] = [m for m in discord.messages.values() if m.interaction == slashed]
    assert "U+200B" in answer.content and answer.flags & 64



async def test_a_resume_url_that_keeps_failing_leads_to_a_new_session(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord):
        discord.resume_down = True
        await discord.drop(4000)

        async def identified_again() -> bool:
            return len(discord.identifies) == 2 and await _ready(discord)

        await eventually(identified_again, "a new session after the resume URL failed")
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer on the new session")
    assert discord.connections.count("/resume") == 0  # refused before the WebSocket (503), so never opened

# -- HTTP interactions mode: Discord posts signed interactions to /hooks/discord/interactions ------------------------


async def test_conformance_with_http_interactions(tmp_path: Path, discord: DiscordServer) -> None:
    """The kit's scenario, with interactions posted to the engine's endpoint (its port is known once it runs, so
    the kit's steps are run here rather than through check_connector)."""
    driver = DiscordDriver(discord, slash=True)
    config = kit_config(tmp_path, driver, "discord", settings(discord, public_key=discord.public_key))
    async with kit_engine(config, discover()) as engine:
        discord.interactions_url = f"http://127.0.0.1:{engine.port}/hooks/discord/interactions"
        await conformance._notification_once_despite_429(engine, driver)
        await conformance._press_acknowledges_and_edits(engine, driver)
        await conformance._backup_with_progress_and_result(driver)
        await conformance._viewer_is_denied(engine, driver)
        await conformance._reconnect_loses_nothing(engine, driver)
    assert discord.http_answers and set(discord.http_answers) == {200}
    assert all(i.over_http and i.response in (5, 6) for i in discord.interactions.values())
    assert discord.repeats == 0


async def test_the_endpoint_answers_ping_and_refuses_bad_signatures(tmp_path: Path, discord: DiscordServer) -> None:
    async with discord_engine(tmp_path, discord, public_key=discord.public_key) as engine:
        discord.interactions_url = f"http://127.0.0.1:{engine.port}/hooks/discord/interactions"
        ping = json.dumps({"id": discord.snowflake(), "application_id": discord.application_id, "type": 1,
                           "token": "t", "version": 1}).encode()
        assert await discord.post_interaction(ping) == (200, {"type": 1})
        now = str(int(time.time()))
        forged = SigningKey.generate().sign(now.encode() + ping).signature.hex()
        assert (await discord.post_interaction(ping, signature=forged, timestamp=now))[0] == 401
        tampered = discord.sign(now, ping)
        assert (await discord.post_interaction(ping.replace(b'"t"', b'"u"'), signature=tampered,
                                               timestamp=now))[0] == 401
        stale = str(int(time.time()) - 3600)
        assert (await discord.post_interaction(ping, timestamp=stale))[0] == 401, "an old signed request replayed"
        assert (await discord.post_interaction(ping, signature="zz"))[0] == 401


async def test_no_token_reaches_the_logs(tmp_path: Path, discord: DiscordServer,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with discord_engine(tmp_path, discord):
        discord.rate_limit_next("edit", 0.2)
        discord.rate_limit_next("create", 0.2)
        slashed = await discord.slash(ADMIN, ROOM, "whoami")

        async def answered() -> list[Posted]:
            return [m for m in discord.channel_messages(ROOM) if m.interaction == slashed and m.content]

        await eventually(answered, "the answer to /herald whoami")
        await discord.drop(4000)
        said = await discord.say(ADMIN, ROOM, "/whoami")
        await eventually(lambda: _answered(discord, said), "an answer after the drop")
    tokens = [discord.token] + [i.payload["token"] for i in discord.interactions.values()]
    assert discord.limited and caplog.text
    assert not [t for t in tokens if t in caplog.text], "a token was logged"
