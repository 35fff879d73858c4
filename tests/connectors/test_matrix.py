"""The Matrix connector against a real Synapse on loopback (tests/connectors/synapse.py), with real accounts.

The conformance kit runs in one engine with Herald's own chat; the rest checks what is particular to Matrix: a
restart between two syncs loses and repeats nothing, an edit replaces the notification in a second person's view,
replies are threaded, reactions press buttons, invites are joined only from known people, an encrypted room is
reported when encryption is off, and a real Synapse 429 becomes RateLimited.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nio import RoomSendError
from pydantic import ValidationError

from engine.plugin import (
    AddressError,
    Conversation,
    LinkButton,
    Message,
    RateLimited,
    Rejected,
    Unavailable,
    read_secret,
)
from engine.security import identity
from engine.testing.conformance import check_connector, eventually, kit_config, kit_engine, post_alert
from integrations.matrix import content, integration, sync
from integrations.matrix.config import MatrixConfig, parse_address
from integrations.matrix.connector import MatrixConnector, classify
from integrations.matrix.session import Session
from integrations.matrix.sync import ENCRYPTED_OFF_TEXT
from tests.connectors.conftest import Homeserver
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import (
    MatrixDriver,
    MatrixPeople,
    as_shown,
    dumps,
    fresh_driver,
    installed_with_matrix,
    matrix_config,
    matrix_kit,
)
from tests.connectors.support import MemoryStore


@pytest.mark.parametrize("press", ["a numbered reply", "a reaction"])
async def test_matrix_passes_the_conformance_kit(tmp_path: Path, homeserver: Homeserver, people: MatrixPeople,
                                                 proxy: MatrixProxy, press: str) -> None:
    driver = await fresh_driver(homeserver, people, proxy, press_by_reaction=press == "a reaction")
    await check_connector(tmp_path, integration, driver, matrix_config(homeserver, proxy))
    assert proxy.limited == 1, "the kit's 429 was not answered by the proxy"
    assert proxy.dropped >= 1, "no /sync long poll was in flight to cut"


async def test_a_restart_between_two_syncs_loses_and_repeats_nothing(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two events per room in one sync: what was said while Herald was down overflows it, and the gap is fetched.
    monkeypatch.setattr(sync, "TIMELINE_LIMIT", 2)
    driver = await fresh_driver(homeserver, people, proxy)
    dm = driver.direct_chat(driver.admin)

    async def answers(prefix: str) -> list[str]:
        return [m.text for m in await driver.shown(dm) if m.text.startswith(prefix)]

    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()):
        # In the room first: with two events a sync, a join's batch would not reach back to the invite.
        await eventually(lambda: _has(people.joined(homeserver.alice, dm), homeserver.bot.user_id), "the bot in")
        await driver.say(driver.admin, dm, "/help")
        await eventually(lambda: answers("You can run:"), "the answer to /help")
    # Said while Herald is down: the next engine's first sync brings both, after the stored next_batch.
    await driver.say(driver.admin, dm, "/whoami")
    await driver.say(driver.admin, dm, "!help")  # `!` for clients that keep a leading slash to themselves
    for _ in range(3):
        await driver.say(driver.admin, dm, "/help")
    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()):
        await eventually(lambda: answers("You are alice"), "the answer to /whoami sent while Herald was down")

        async def five_helps() -> list[str]:
            found = await answers("You can run:")
            return found if len(found) >= 5 else []

        await eventually(five_helps, "the answers to !help and /help x3 sent while Herald was down")
        await asyncio.sleep(2)  # a repeat of the first /help (a lost next_batch) would have been answered by now
        assert len(await answers("You can run:")) == 5, dumps(await people.timeline(homeserver.alice, dm))
        assert len(await answers("You are alice")) == 1


async def test_an_edit_replaces_the_notification_for_another_person_and_replies_are_threaded(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy) -> None:
    driver = await fresh_driver(homeserver, people, proxy, press_by_reaction=True)
    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()) as engine:
        await eventually(lambda: people.joined(homeserver.alice, driver.room), "the bot in the team's room")
        await people.call(homeserver.bob, "POST", f"/_matrix/client/v3/join/{driver.room}", {})
        await post_alert(engine, "EditSeen")

        async def note_for_bob() -> list[Any]:
            seen = as_shown(await people.timeline(homeserver.bob, driver.room), homeserver.bot.user_id)
            return [m for m in seen if "EditSeen" in m.text]

        [note] = await eventually(note_for_bob, "the notification, as bob sees it")
        assert note.text.endswith("Reply with a number: 1 Acknowledge · 2 Mute 1h")

        async def offered() -> list[str]:
            keys = [e["content"]["m.relates_to"]["key"] for e in await people.timeline(homeserver.bob, driver.room)
                    if e["type"] == "m.reaction" and e["sender"] == homeserver.bot.user_id]
            return keys if len(keys) >= 2 else []

        assert await eventually(offered, "the bot's reactions under the notification") == ["✅", "🔕"]
        await driver.press(driver.admin, driver.room, note, "Acknowledge")  # a ✅ reaction

        async def edited() -> list[Any]:
            return [m for m in await note_for_bob() if "Acknowledged by alice" in m.text]

        [now] = await eventually(edited, "bob's view of the notification to show the acknowledgement")
        assert now.id == note.id and now.edits >= 1 and "1 Acknowledge" not in now.text
        events = await people.timeline(homeserver.bob, driver.room)
        edit = next(e for e in events if (e["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace")
        assert edit["content"]["body"].startswith("* ") and edit["content"]["m.new_content"]["msgtype"] == "m.notice"
        assert edit["content"]["m.new_content"]["format"] == "org.matrix.custom.html"

        dm = driver.direct_chat(driver.admin)
        asked = await people.say(homeserver.alice, dm, "/whoami <b>")
        answers = await eventually(lambda: _from_bot(people, homeserver, dm), "an answer to /whoami")
        relation = answers[-1]["content"].get("m.relates_to") or {}
        assert relation.get("m.in_reply_to", {}).get("event_id") == asked, answers[-1]


async def _from_bot(people: MatrixPeople, hs: Homeserver, room: str) -> list[dict[str, Any]]:
    return [e for e in await people.timeline(hs.alice, room)
            if e.get("sender") == hs.bot.user_id and e.get("type") == "m.room.message"]


async def test_invites_are_joined_from_known_people_only(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy) -> None:
    driver = await fresh_driver(homeserver, people, proxy)
    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()):
        bot = homeserver.bot.user_id
        stranger = await people.create_room(homeserver.carol, [bot])
        known = await people.create_room(homeserver.bob, [bot])
        await eventually(lambda: _has(people.joined(homeserver.bob, known), bot), "the bot to join bob's room")
        assert bot not in await people.joined(homeserver.carol, stranger), "joined a stranger's invite"


async def _has(members: Any, who: str) -> bool:
    return who in await members


async def test_an_encrypted_room_is_reported_when_encryption_is_off(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy) -> None:
    driver = await fresh_driver(homeserver, people, proxy)
    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()):
        room = await people.create_room(homeserver.alice, [homeserver.bot.user_id], encrypted=True)

        async def told() -> list[dict[str, Any]]:
            return [e for e in await _from_bot(people, homeserver, room) if e["content"]["body"] == ENCRYPTED_OFF_TEXT]

        await eventually(told, "a notice that Herald cannot read the encrypted room")
        await people.send(homeserver.alice, room, "m.room.encrypted", {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn...", "sender_key": "x", "device_id": "D",
            "session_id": "s"})
        await asyncio.sleep(1.5)
        assert len(await told()) == 1, "the notice is given once per room"


async def test_a_matrix_account_links_itself(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy) -> None:
    driver = await fresh_driver(homeserver, people, proxy)
    config = matrix_kit(tmp_path, driver, homeserver, proxy)
    dave = config.principals["bob"].model_copy(update={"accounts": []})
    config = config.model_copy(update={"principals": {**config.principals, "dave": dave}})
    async with kit_engine(config, installed_with_matrix()) as engine:
        # carol's account is no one's yet: she talks to the bot in the team's room, where alice invited her.
        await eventually(lambda: _has(people.joined(homeserver.alice, driver.room), homeserver.bot.user_id),
                         "the bot in the team's room")
        await people.call(homeserver.alice, "POST", f"/_matrix/client/v3/rooms/{driver.room}/invite",
                          {"user_id": homeserver.carol.user_id})
        await people.call(homeserver.carol, "POST", f"/_matrix/client/v3/join/{driver.room}", {})
        token, _ = await engine.db.call(identity.issue_link_token, "dave", 600)
        await people.say(homeserver.carol, driver.room, f"/link {token}")
        await eventually(lambda: _texts(driver, "Linked"), "the answer to /link")
        await people.say(homeserver.carol, driver.room, "/whoami")
        [answer] = await eventually(lambda: _texts(driver, "You are dave"), "the answer to /whoami")
    assert answer == "You are dave (roles: viewer) on matrix account @carol:localhost."


async def _texts(driver: MatrixDriver, prefix: str) -> list[str]:
    return [m.text for m in await driver.shown(driver.room) if m.text.startswith(prefix)]


async def test_a_real_synapse_429_is_rate_limited(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy) -> None:
    """Synapse's own rate limiter, lowered for the bot alone through the admin API (no proxy fault here)."""
    bot = homeserver.bot.user_id
    override = f"/_synapse/admin/v1/users/{bot}/override_ratelimit"
    room = await people.create_room(homeserver.alice, [bot])
    await people.call(homeserver.bot, "POST", f"/_matrix/client/v3/join/{room}", {})
    session = Session(MatrixConfig(homeserver=homeserver.synapse.url, user_id=bot,
                                   access_token=homeserver.bot.access_token, device_id=homeserver.bot.device_id),
                      MemoryStore(), tmp_path / "store")
    await session.start()
    connector = MatrixConnector(_Context(), session)  # type: ignore[arg-type]
    to = Conversation(platform="matrix", chat=room)
    await people.call(homeserver.alice, "POST", override, {"messages_per_second": 1, "burst_count": 1})
    try:
        with pytest.raises(RateLimited) as limited:
            for n in range(5):
                await connector.send(to, Message(kind="reply", text=f"hello {n}"), key=f"rl-{n}", seq=n)
        assert 0 < limited.value.retry_after_s <= 5
        # The same transaction id again is the same event: the homeserver deduplicates a retried send.
        await people.call(homeserver.alice, "DELETE", override)
        first = await connector.send(to, Message(kind="reply", text="hello 0"), key="rl-0", seq=0)
        again = await connector.send(to, Message(kind="reply", text="hello 0"), key="rl-0", seq=0)
        assert first.id == again.id
        texts = [e["content"].get("body") for e in await people.timeline(homeserver.alice, room)
                 if e.get("sender") == bot]
        assert texts.count("hello 0") == 1
    finally:
        await people.call(homeserver.alice, "DELETE", override)
        await session.close()


class _Context:
    """The one part of IntegrationContext the connector uses outside an engine."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self._store = store or MemoryStore()

    def store(self, namespace: str) -> MemoryStore:
        return self._store


def _e2e_missing() -> str | None:
    from integrations.matrix.config import encryption_available  # noqa: PLC0415

    return None if encryption_available() else "the E2EE extra is not installed: pip install 'matrix-nio[e2e]'"


async def test_an_encrypted_round_trip(tmp_path: Path, homeserver: Homeserver, people: MatrixPeople,
                                       proxy: MatrixProxy) -> None:
    """alice, on an encrypting client of her own, writes /whoami in an encrypted room; Herald reads it and answers
    encrypted, and alice's client decrypts the answer."""
    if (reason := _e2e_missing()) is not None:
        pytest.skip(reason)
    from nio import AsyncClient, AsyncClientConfig, LoginResponse, MegolmEvent, RoomMessageNotice  # noqa: PLC0415 - only with the extra

    bot = homeserver.synapse.login("herald", "herald-pw", device_id="HERALDE2E")  # a device with no keys yet
    alice = AsyncClient(homeserver.synapse.url, homeserver.alice.user_id, store_path=str(_private(tmp_path / "a")),
                        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
    assert isinstance(await alice.login("alice-pw", device_name="alice-e2e"), LoginResponse)
    driver = await fresh_driver(homeserver, people, proxy)
    config = matrix_config(homeserver, proxy, encryption=True, store_dir=str(tmp_path / "herald-keys"),
                     access_token=bot.access_token, device_id=bot.device_id)
    try:
        await alice.sync(timeout=0, full_state=True)
        await alice.keys_upload()
        async with kit_engine(kit_config(tmp_path, driver, "matrix", config), installed_with_matrix()):
            room = await people.create_room(homeserver.alice, [bot.user_id], encrypted=True)
            await eventually(lambda: _has(people.joined(homeserver.alice, room), bot.user_id), "the bot to join")

            async def bot_keys_known() -> bool:
                await alice.sync(timeout=0)
                if alice.should_query_keys:
                    await alice.keys_query()
                return any(d.device_id == bot.device_id for d in alice.device_store.active_user_devices(bot.user_id))

            await eventually(bot_keys_known, "alice's client to know the bot's device keys")
            await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "/whoami"},
                                  ignore_unverified_devices=True)
            raw = await people.timeline(homeserver.alice, room)
            assert not any((e.get("content") or {}).get("body") == "/whoami" for e in raw), "sent in clear"

            async def answer() -> list[str]:
                found: list[str] = []
                response = await alice.sync(timeout=500)
                for info in response.rooms.join.values() if hasattr(response, "rooms") else []:
                    for event in info.timeline.events:
                        if isinstance(event, RoomMessageNotice) and event.sender == bot.user_id:
                            found.append(event.body)
                        assert not isinstance(event, MegolmEvent) or event.sender != bot.user_id, \
                            "alice could not decrypt Herald's answer"
                return [t for t in found if t.startswith("You are alice")]

            answers = await eventually(answer, "Herald's encrypted answer, decrypted by alice")
            assert answers[0].startswith("You are alice (roles: admin) on matrix account @alice:localhost")
            raw = await people.timeline(homeserver.alice, room)
            assert [e["type"] for e in raw if e.get("sender") == bot.user_id][-1] == "m.room.encrypted"
    finally:
        await alice.close()


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# -- without a homeserver: the config, addresses, contents and error classes ------------------------------------


def test_the_config_takes_one_login_in_any_secret_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"homeserver": "https://matrix.example.org/", "user_id": "@herald:example.org"}
    assert MatrixConfig(**base, access_token="t").homeserver == "https://matrix.example.org"
    monkeypatch.setenv("HERALD_TEST_MATRIX_PW", "pw")
    assert read_secret(MatrixConfig(**base, password_env="HERALD_TEST_MATRIX_PW"), "password") == "pw"
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    secret.chmod(0o644)
    with pytest.raises(ValidationError, match="can be read by others"):
        MatrixConfig(**base, access_token_file=secret)
    secret.chmod(0o600)
    assert read_secret(MatrixConfig(**base, access_token_file=secret), "access_token") == "from-a-file"
    with pytest.raises(ValidationError, match="not both"):
        MatrixConfig(**base, access_token="t", password="p")
    with pytest.raises(ValidationError, match="access_token is required"):
        MatrixConfig(**base)
    with pytest.raises(ValidationError, match="full Matrix id"):
        MatrixConfig(homeserver="https://m.org", user_id="herald", access_token="t")
    with pytest.raises(ValidationError, match="Extra inputs"):
        MatrixConfig(**base, access_token="t", acess_token="typo")


def test_addresses_are_room_ids_room_aliases_or_user_ids() -> None:
    for good in ("!AbC:example.org", "!AbCdEf0123_-", "#ops:example.org", "@alice:example.org"):
        assert parse_address(good) == good
    for bad in ("#ops", "#:example.org", "AbC:example.org", "@alice", "", "!a b"):
        with pytest.raises(AddressError, match="room id such as"):
            parse_address(bad)


def test_links_are_lines_and_anchors_before_the_numbered_choices() -> None:
    message = Message(kind="notification", text="[CRITICAL] disk\n\nReply with a number: 1 Acknowledge · 2 Mute 1h",
                      links=(LinkButton(label="Runbook", url='https://wiki.example/a?b=1&c="2"'),))
    sent = content.notice(message)
    assert sent["body"] == ('[CRITICAL] disk\nRunbook: https://wiki.example/a?b=1&c="2"\n\n'
                            "Reply with a number: 1 Acknowledge · 2 Mute 1h")
    assert '<a href="https://wiki.example/a?b=1&amp;c=&quot;2&quot;">Runbook</a>' in sent["formatted_body"]
    assert content.choice_labels(sent["body"]) == ["Acknowledge", "Mute 1h"]
    assert content.replacement("$n", message)["m.new_content"]["body"] == sent["body"]  # edits keep them


def test_contents_escape_html_thread_replies_and_edit_with_a_fallback() -> None:
    message = Message(kind="reply", title="<Disk>", text="a < b & c\nnext", in_reply_to="$ev")
    sent = content.notice(message)
    assert sent["msgtype"] == "m.notice" and sent["body"] == "<Disk>\na < b & c\nnext"
    assert sent["formatted_body"] == "<b>&lt;Disk&gt;</b><br/>a &lt; b &amp; c<br/>next"
    assert sent["m.relates_to"] == {"m.in_reply_to": {"event_id": "$ev"}}
    edit = content.replacement("$orig", message)
    assert edit["body"].startswith("* ") and edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert "m.relates_to" not in edit["m.new_content"] and edit["m.new_content"]["body"] == sent["body"]


def test_commands_and_reactions_read_as_herald_expects() -> None:
    assert content.command_text("!backup now") == "/backup now"
    assert content.command_text("> <@bob:x> earlier\n> more\n\n/backup now") == "/backup now"
    assert content.command_text("!!! loud") == "!!! loud" and content.command_text("!") == "!"
    note = Message(kind="notification", text="Disk\n\nReply with a number: 1 Acknowledge · 2 Mute 1h")
    choices = {content.emoji_key(k): v for k, v in content.reaction_choices(note, ["h1", "h2"]).items()}
    assert choices[content.emoji_key("✅")] == "h1" and choices[content.emoji_key("🔕")] == "h2"
    assert choices[content.emoji_key("2️⃣")] == "h2"
    assert content.offered_reactions(note, ["h1", "h2"]) == ["✅", "🔕"]


@pytest.mark.parametrize(("status", "errcode", "retry_ms", "expected"), [
    (429, "M_LIMIT_EXCEEDED", 2500, RateLimited), (502, None, None, Unavailable), (None, None, None, Unavailable),
    (403, "M_FORBIDDEN", None, Rejected), (400, "M_TOO_LARGE", None, Rejected),
    (401, "M_UNKNOWN_TOKEN", None, Unavailable)])
def test_homeserver_errors_are_classified(status: int | None, errcode: str | None, retry_ms: int | None,
                                          expected: type[Exception]) -> None:
    class Transport:
        def __init__(self, status: int | None) -> None:
            self.status = status

    answer = RoomSendError("refused", errcode, retry_ms)
    answer.transport_response = Transport(status) if status is not None else None
    error = classify(answer, "send")
    assert type(error) is expected
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 2.5


def test_a_429_without_retry_after_ms_waits_what_the_retry_after_header_says() -> None:
    class Transport:
        status = 429
        headers = {"Retry-After": "7"}

    answer = RoomSendError("Too Many Requests", "M_LIMIT_EXCEEDED", None)
    answer.transport_response = Transport()
    error = classify(answer, "send")
    assert isinstance(error, RateLimited) and error.retry_after_s == 7


async def test_a_password_login_keeps_its_device_and_a_person_gets_a_direct_room(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart logs in again on the same device, so a send repeated after it (the outbox's retry of a send whose
    answer was lost in the crash) is deduplicated by the homeserver: what Capabilities(dedupes=True) promises."""
    monkeypatch.setenv("HERALD_TEST_MATRIX_PW", "herald-pw")
    config = MatrixConfig(homeserver=homeserver.synapse.url, user_id=homeserver.bot.user_id,
                          password_env="HERALD_TEST_MATRIX_PW")
    store = MemoryStore()
    bob = Conversation(platform="matrix", chat=homeserver.bob.user_id)
    sent, devices, tokens = [], [], []
    for _ in range(2):
        session = Session(config, store, tmp_path / "store")
        await session.start()
        devices.append(session.client.device_id)
        tokens.append(session.client.access_token)
        try:
            connector = MatrixConnector(_Context(store), session)  # type: ignore[arg-type]
            sent.append(await connector.send(bob, Message(kind="reply", text="hello bob"), key="dm-1", seq=1))
        finally:
            await session.close()
    assert devices[0] == devices[1] == store.values["device_id"] and tokens[0] != tokens[1]
    assert sent[0] == sent[1] and sent[0].chat.startswith("!")  # one direct room, one event
    await people.call(homeserver.bob, "POST", f"/_matrix/client/v3/join/{sent[0].chat}", {})
    texts = [e["content"].get("body") for e in await people.timeline(homeserver.bob, sent[0].chat)
             if e["type"] == "m.room.message"]
    assert texts == ["hello bob"]


async def test_what_was_said_between_the_invite_and_the_join_is_answered_and_older_history_not(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "TIMELINE_LIMIT", 2)  # the join's batch cannot reach back to the invite by itself
    driver = await fresh_driver(homeserver, people, proxy)
    room = await people.create_room(homeserver.alice, [])
    await people.say(homeserver.alice, room, "/whoami")  # before the bot was asked in: history, not answered
    await people.call(homeserver.alice, "POST", f"/_matrix/client/v3/rooms/{room}/invite",
                      {"user_id": homeserver.bot.user_id})
    await people.say(homeserver.alice, room, "/help")  # while Herald is not running yet
    for n in range(3):  # emotes, which Herald does not read: they push the invite out of the join's batch
        await people.send(homeserver.alice, room, "m.room.message", {"msgtype": "m.emote", "body": f"waves {n}"})
    async with kit_engine(matrix_kit(tmp_path, driver, homeserver, proxy), installed_with_matrix()):
        answers = await eventually(lambda: _from_bot(people, homeserver, room), "the answer to /help")
        await asyncio.sleep(1.5)
        texts = [e["content"]["body"] for e in await _from_bot(people, homeserver, room)]
    assert len(answers) == 1 and texts[0].startswith("You can run:") and len(texts) == 1, texts
