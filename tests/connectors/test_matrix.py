"""The Matrix connector against a real Synapse on loopback (tests/connectors/synapse.py), with real accounts.

The conformance kit runs in one engine with Herald's own chat; the rest checks what is particular to Matrix: a
restart between two syncs loses and repeats nothing, an edit replaces the notification in a second person's view,
replies are threaded, reactions press buttons, invites are joined only from known people, an encrypted room is
reported when encryption is off, and a real Synapse 429 becomes RateLimited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.plugin import discover
from engine.testing.conformance import check_connector
from integrations.matrix import integration
from tests.connectors.conftest import Homeserver
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import MatrixDriver, MatrixPeople


@pytest.fixture
async def people(homeserver: Homeserver) -> AsyncIterator[MatrixPeople]:
    async with aiohttp.ClientSession() as http:
        yield MatrixPeople(homeserver.synapse, http)


@pytest.fixture
async def proxy(homeserver: Homeserver) -> AsyncIterator[MatrixProxy]:
    proxy = MatrixProxy(homeserver.synapse.url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def _driver(hs: Homeserver, people: MatrixPeople, proxy: MatrixProxy, **options: Any) -> MatrixDriver:
    """Fresh rooms for one test: the team's room and each person's direct room with the bot, all inviting it."""
    bot = hs.bot.user_id
    room = await people.create_room(hs.alice, [bot, hs.bob.user_id])
    dms = {hs.alice.user_id: await people.create_room(hs.alice, [bot], direct=True),
           hs.bob.user_id: await people.create_room(hs.bob, [bot], direct=True)}
    return MatrixDriver(people, proxy, alice=hs.alice, bob=hs.bob, bot=bot, room=room, dms=dms, **options)


def _config(hs: Homeserver, proxy: MatrixProxy, **options: Any) -> dict[str, Any]:
    return {"homeserver": proxy.url, "user_id": hs.bot.user_id, "access_token": hs.bot.access_token,
            "device_id": hs.bot.device_id, "sync_timeout_s": 5, **options}


def _with_herald_chat() -> list[Any]:
    return [i for i in discover() if i.manifest.name == "chat"]


async def test_matrix_passes_the_conformance_kit(tmp_path: Path, homeserver: Homeserver, people: MatrixPeople,
                                                 proxy: MatrixProxy) -> None:
    driver = await _driver(homeserver, people, proxy)
    await check_connector(tmp_path, integration, driver, _config(homeserver, proxy))
    assert proxy.limited == 1, "the kit's 429 was not answered by the proxy"
    assert proxy.dropped >= 1, "no /sync long poll was in flight to cut"
