"""The Matrix tests' homeserver: one real Synapse for the session (tests/connectors/synapse.py), and per test the
people who talk to it (MatrixPeople) and the fault-injecting proxy the bot talks through (MatrixProxy)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import MatrixPeople
from tests.connectors.synapse import Homeserver, Synapse, missing_reason

__all__ = ["Homeserver"]


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("HERALD_REQUIRE_SYNAPSE") == "1":
            pytest.fail(f"HERALD_REQUIRE_SYNAPSE=1 but {reason}")
        pytest.skip(reason)
    synapse = Synapse(tmp_path_factory.mktemp("synapse"))
    synapse.start()
    try:
        yield Homeserver(synapse, alice=synapse.register("alice", "alice-pw", admin=True),
                         bob=synapse.register("bob", "bob-pw"), carol=synapse.register("carol", "carol-pw"),
                         bot=synapse.register("herald", "herald-pw", device_id="HERALDTEST"))
    finally:
        synapse.stop()


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
