"""The Matrix tests' homeserver: one real Synapse for the session (tests/connectors/synapse.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.connectors.synapse import Account, Synapse, missing_reason


@dataclass
class Homeserver:
    synapse: Synapse
    alice: Account  # admin on Herald, and a Synapse admin (to lower the bot's rate limit)
    bob: Account
    carol: Account  # no principal's account
    bot: Account  # Herald's own account, on a fixed device


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
