"""Every chat platform in one engine (issues 14-17 and 19): an alert reaches a team whose rooms are on Telegram,
Slack, Discord and Matrix and whose member is on Herald's chat; Acknowledge pressed on one platform edits every copy
on all of them, and so does the resolve. Real connectors against the fake servers of tests/connectors and a real
Synapse, over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.config import Config
from engine.plugin import discover
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import PlatformDriver, Shown, eventually, post_alert
from tests.connectors.conftest import Homeserver
from tests.connectors.discord_server import DiscordServer
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import MatrixPeople
from tests.connectors.slack_server import SlackServer
from tests.connectors.telegram_server import TelegramServer
from tests.connectors.test_discord import DiscordDriver
from tests.connectors.test_discord import settings as discord_settings
from tests.connectors.test_matrix import _config as matrix_config
from tests.connectors.test_matrix import _driver as matrix_driver
from tests.connectors.test_matrix import people, proxy  # noqa: F401 - the Matrix fixtures, used by name below
from tests.connectors.test_slack import SlackDriver, socket_config
from tests.connectors.test_telegram import TelegramDriver, polling
from tests.support import ALICE_TOKEN


@pytest.fixture
async def platforms() -> AsyncIterator[tuple[TelegramServer, SlackServer, DiscordServer]]:
    telegram, slack = TelegramServer(), SlackServer()
    await telegram.start()
    await slack.start()
    try:
        async with DiscordServer() as discord:
            yield telegram, slack, discord
    finally:
        await slack.stop()
        await telegram.stop()


def _config(tmp: Path, drivers: list[PlatformDriver], sections: dict[str, Any]) -> Config:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "ops.rules").write_text("on alert notify ops with buttons\n")
    accounts = [f"{d.platform}:{d.admin}" for d in drivers]
    return Config.model_validate({
        "data_dir": "data", "rules_dir": "rules", "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": accounts, "chat_tokens": [ALICE_TOKEN]}},
        "teams": {"ops": {"members": ["alice"], "targets": [f"{d.platform}:{d.room}" for d in drivers]}},
        "integrations": sections,
    }).resolved(tmp)


def _note(driver: PlatformDriver, name: str) -> Callable[[], Awaitable[Shown | None]]:
    async def find() -> Shown | None:
        return next((m for m in await driver.shown(driver.room) if name in m.text), None)
    return find


async def test_one_alert_on_every_platform_follows_an_acknowledge_pressed_on_one(
        tmp_path: Path, platforms: tuple[TelegramServer, SlackServer, DiscordServer], homeserver: Homeserver,
        people: MatrixPeople, proxy: MatrixProxy) -> None:  # noqa: F811 - pytest fixtures
    telegram, slack, discord = platforms
    drivers: list[PlatformDriver] = [TelegramDriver(telegram), SlackDriver(slack), DiscordDriver(discord, slash=False),
                                     await matrix_driver(homeserver, people, proxy)]
    config = _config(tmp_path, drivers, {"telegram": polling(telegram), "slack": socket_config(slack),
                                         "discord": discord_settings(discord),
                                         "matrix": matrix_config(homeserver, proxy)})
    async with running_engine(config, integrations=discover()) as engine, \
            ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
        await post_alert(engine, "EverywhereDown")
        chat_note = await alice.wait_for(lambda f: f["type"] == "notification")
        notes = {d.platform: await eventually(_note(d, "EverywhereDown"), f"the notification on {d.platform}")
                 for d in drivers}
        assert all([label for label, _ in n.buttons] == ["Acknowledge", "Mute 1h"] for n in notes.values()), notes

        await drivers[2].press(drivers[2].admin, drivers[2].room, notes["discord"], "Acknowledge")  # on Discord

        for d in drivers:
            async def acknowledged(d: PlatformDriver = d) -> Shown | None:
                shown = await _note(d, "EverywhereDown")()
                return shown if shown and "Acknowledged by alice" in shown.text else None

            shown = await eventually(acknowledged, f"the acknowledgement on {d.platform}")
            assert [label for label, _ in shown.buttons] == ["Mute 1h"], (d.platform, shown)
        edit = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged" in f["text"])
        assert edit["message"] == str(chat_note["seq"])

        await post_alert(engine, "EverywhereDown", resolved=True)
        for d in drivers:
            async def resolved(d: PlatformDriver = d) -> Shown | None:
                shown = await _note(d, "EverywhereDown")()
                return shown if shown and "Resolved at 00:12 UTC, after 12m" in shown.text else None

            shown = await eventually(resolved, f"the resolve on {d.platform}")
            assert shown.buttons == [] and "Acknowledged by alice" in shown.text, (d.platform, shown)
        done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
        assert done["buttons"] == []
