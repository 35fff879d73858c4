"""The built-in team `ops` gives way to what a user writes: a rule file's `team ops = ...` replaces it (no clash
with a config that names no teams), and without one the default still reaches chat room "ops"."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config, load_config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.conftest import CONFIG_TOML
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url, http_url

NO_TEAMS = CONFIG_TOML.split("[teams.ops]")[0]  # the test config without its [teams] section


@pytest.fixture
def no_teams_config(tmp_path: Path, rules_dir: Path) -> Config:
    path = tmp_path / "herald.toml"
    path.write_text(NO_TEAMS.replace("{rules}", str(rules_dir)))
    return load_config(path)


async def _rooms_notified(engine: Engine) -> set[str]:
    """Post a critical database alert (a default rule notifies team ops); which of the rooms "night-shift" and
    "ops" a chat client got the notification in."""
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["night-shift"]) as night, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN, rooms=["ops"]) as ops:
        payload = alert_payload({"severity": "critical", "service": "database"}, summary="disk", resolved=False)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                assert response.status == 200, await response.text()
        got = set()
        for room, client in (("night-shift", night), ("ops", ops)):
            with contextlib.suppress(TimeoutError):
                await client.wait_for(lambda f: f["type"] == "notification", timeout=5)
                got.add(room)
    return got


@pytest.fixture
async def engine_with_rule_team(no_teams_config: Config) -> AsyncIterator[Engine]:
    (no_teams_config.rules_dir / "teams.rules").write_text('team ops = chat "night-shift"\n')
    async with running_engine(no_teams_config) as engine:
        yield engine


async def test_a_rule_file_team_named_like_the_default_replaces_it(engine_with_rule_team: Engine) -> None:
    assert await _rooms_notified(engine_with_rule_team) == {"night-shift"}


async def test_without_teams_anywhere_the_default_team_reaches_room_ops(no_teams_config: Config) -> None:
    async with running_engine(no_teams_config) as engine:
        assert await _rooms_notified(engine) == {"ops"}
