"""Driving Matrix as its people would: real accounts on the real Synapse, talking over the client-server API.

alice (an admin) and bob (a viewer) write in rooms with their own access tokens; what they see is read back from
the room's timeline (`GET /rooms/{room}/messages`) with edits applied as a client applies them (the latest
`m.replace` of an event gives its `m.new_content`). Matrix has no buttons: a notification's numbered choices are
shown as its buttons, and pressing one is replying with its number (or reacting, see `press_by_reaction`).
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from engine.core.config import Config
from engine.plugin import discover
from engine.testing.conformance import Shown, kit_config
from integrations.matrix import integration
from integrations.matrix.content import choice_labels
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.synapse import Account, Homeserver, Synapse

ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
REACTIONS = {"Acknowledge": "✅", "Mute 1h": "🔕"}
_txn = itertools.count(1)


class MatrixPeople:
    """Raw client-server API calls as one of the test's people."""

    def __init__(self, synapse: Synapse, http: aiohttp.ClientSession) -> None:
        self.synapse = synapse
        self.http = http

    async def call(self, who: Account, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, self.synapse.url + path, json=body,
                                     headers={"Authorization": f"Bearer {who.access_token}"}) as answer:
            data = await answer.json(content_type=None)
            assert answer.status == 200, f"{method} {path}: {answer.status} {data}"
            return data

    async def create_room(self, who: Account, invite: list[str], *, direct: bool = False,
                          encrypted: bool = False, alias: str | None = None) -> str:
        """A new room; `alias`: its local part, making the room `#alias:localhost` too."""
        body: dict[str, Any] = {"preset": "private_chat", "invite": invite, "is_direct": direct}
        if alias is not None:
            body["room_alias_name"] = alias
        if encrypted:
            body["initial_state"] = [ENCRYPTION_STATE]
        return str((await self.call(who, "POST", "/_matrix/client/v3/createRoom", body))["room_id"])

    async def send(self, who: Account, room: str, event_type: str, content: dict[str, Any]) -> str:
        path = f"/_matrix/client/v3/rooms/{_q(room)}/send/{event_type}/test{next(_txn)}"
        return str((await self.call(who, "PUT", path, content))["event_id"])

    async def say(self, who: Account, room: str, text: str) -> str:
        return await self.send(who, room, "m.room.message", {"msgtype": "m.text", "body": text})

    async def timeline(self, who: Account, room: str) -> list[dict[str, Any]]:
        """Every event of the room `who` can see, oldest first."""
        path = f"/_matrix/client/v3/rooms/{_q(room)}/messages?dir=b&limit=1000"
        return list(reversed((await self.call(who, "GET", path))["chunk"]))

    async def joined(self, who: Account, room: str) -> list[str]:
        path = f"/_matrix/client/v3/rooms/{_q(room)}/joined_members"
        return list((await self.call(who, "GET", path))["joined"])


def as_shown(events: list[dict[str, Any]], sender: str) -> list[Shown]:
    """The messages `sender` has in a timeline, oldest first, as a client shows them (edits applied)."""
    shown: dict[str, Shown] = {}
    for event in events:
        if event.get("sender") != sender or event.get("type") != "m.room.message":
            continue
        content = event.get("content") or {}
        relation = content.get("m.relates_to") or {}
        if relation.get("rel_type") == "m.replace":
            original = shown.get(relation.get("event_id", ""))
            if original is not None:
                new = content.get("m.new_content") or {}
                original.text = str(new.get("body", ""))
                original.buttons = _buttons(original.text)
                original.edits += 1
            continue
        text = str(content.get("body", ""))
        shown[event["event_id"]] = Shown(id=event["event_id"], text=text, buttons=_buttons(text))
    return list(shown.values())


def _buttons(text: str) -> list[tuple[str, str]]:
    return [(label, str(n)) for n, label in enumerate(choice_labels(text), start=1)]


def _q(room: str) -> str:
    return urllib.parse.quote(room, safe="")


class MatrixDriver:
    """The conformance kit's view of Matrix (engine.testing.conformance.PlatformDriver)."""

    platform = "matrix"

    def __init__(self, people: MatrixPeople, proxy: MatrixProxy, *, alice: Account, bob: Account, bot: str,
                 room: str, dms: dict[str, str], press_by_reaction: bool = False) -> None:
        self.people = people
        self.proxy = proxy
        self.alice, self.bob, self.bot = alice, bob, bot
        self.admin, self.viewer, self.room = alice.user_id, bob.user_id, room
        self.dms = dms
        self.press_by_reaction = press_by_reaction
        self._accounts = {alice.user_id: alice, bob.user_id: bob}

    def direct_chat(self, account: str) -> str:
        return self.dms[account]

    def _reader(self, chat: str) -> Account:
        return self.bob if chat == self.dms.get(self.bob.user_id) else self.alice

    async def say(self, account: str, chat: str, text: str) -> None:
        await self.people.say(self._accounts[account], chat, text)

    async def press(self, account: str, chat: str, message: Shown, label: str) -> None:
        if self.press_by_reaction:
            await self.people.send(self._accounts[account], chat, "m.reaction", {"m.relates_to": {
                "rel_type": "m.annotation", "event_id": message.id, "key": REACTIONS[label]}})
            return
        number = next(payload for shown_label, payload in message.buttons if shown_label == label)
        await self.say(account, chat, number)

    async def shown(self, chat: str) -> list[Shown]:
        return as_shown(await self.people.timeline(self._reader(chat), chat), self.bot)

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        self.proxy.rate_limit_next_send(retry_after_s)

    async def drop_inbound(self) -> None:
        await self.proxy.drop_syncs()


def dumps(events: list[dict[str, Any]]) -> str:
    return json.dumps([(e.get("sender"), e.get("type"), (e.get("content") or {}).get("body")) for e in events])


async def fresh_driver(hs: Homeserver, people: MatrixPeople, proxy: MatrixProxy, **options: Any) -> MatrixDriver:
    """Fresh rooms for one test: the team's room and each person's direct room with the bot, all inviting it."""
    bot = hs.bot.user_id
    room = await people.create_room(hs.alice, [bot, hs.bob.user_id])
    dms = {hs.alice.user_id: await people.create_room(hs.alice, [bot], direct=True),
           hs.bob.user_id: await people.create_room(hs.bob, [bot], direct=True)}
    return MatrixDriver(people, proxy, alice=hs.alice, bob=hs.bob, bot=bot, room=room, dms=dms, **options)


def matrix_config(hs: Homeserver, proxy: MatrixProxy, **options: Any) -> dict[str, Any]:
    """`[integrations.matrix]` for the bot, talking to Synapse through the proxy."""
    return {"homeserver": proxy.url, "user_id": hs.bot.user_id, "access_token": hs.bot.access_token,
            "device_id": hs.bot.device_id, "sync_timeout_s": 5, **options}


def matrix_kit(tmp: Path, driver: MatrixDriver, hs: Homeserver, proxy: MatrixProxy, **options: Any) -> Config:
    """The conformance kit's installation (engine.testing.conformance.kit_config) with the bot's Matrix config."""
    return kit_config(tmp, driver, "matrix", matrix_config(hs, proxy, **options))


def installed_with_matrix() -> list[Any]:
    """Every installed integration (Herald's chat and webhook among them), this Matrix connector included."""
    return [*(i for i in discover() if i.manifest.name != "matrix"), integration]
