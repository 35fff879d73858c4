"""Every chat platform in one engine (issues 14-17 and 19): an alert reaches a team whose rooms are on Telegram,
Slack, Discord and Matrix and whose member is on Herald's chat; Acknowledge pressed on one platform edits every copy
on all of them, and so do an Unacknowledge pressed on another and the resolve. Real connectors against the fake
servers of tests/connectors and a real Synapse, over loopback."""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config
from engine.plugin import discover
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import PlatformDriver, Shown, eventually, post_alert
from tests.connectors.conftest import Homeserver
from tests.connectors.discord_server import DiscordServer
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import MatrixPeople, fresh_driver, matrix_config
from tests.connectors.slack_server import SlackServer
from tests.connectors.telegram_server import TelegramServer
from tests.connectors.test_discord import DiscordDriver
from tests.connectors.test_discord import settings as discord_settings
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


async def _every_platform(
        tmp: Path, platforms: tuple[TelegramServer, SlackServer, DiscordServer], homeserver: Homeserver,
        people: MatrixPeople, proxy: MatrixProxy) -> tuple[list[PlatformDriver], Config]:
    """A driver for each platform, and one engine's config with all of them turned on."""
    telegram, slack, discord = platforms
    drivers: list[PlatformDriver] = [TelegramDriver(telegram), SlackDriver(slack), DiscordDriver(discord, slash=False),
                                     await fresh_driver(homeserver, people, proxy)]
    return drivers, _config(tmp, drivers, {"telegram": polling(telegram), "slack": socket_config(slack),
                                           "discord": discord_settings(discord),
                                           "matrix": matrix_config(homeserver, proxy)})


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
        people: MatrixPeople, proxy: MatrixProxy) -> None:
    drivers, config = await _every_platform(tmp_path, platforms, homeserver, people, proxy)
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
            assert [label for label, _ in shown.buttons] == ["Unacknowledge", "Mute 1h"], (d.platform, shown)
        edit = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Acknowledged" in f["text"])
        assert edit["message"] == str(chat_note["seq"])

        # Unacknowledge on Matrix (a numbered choice: the shared layer numbered only the buttons shown)
        matrix = drivers[3]
        await matrix.press(matrix.admin, matrix.room, await _note(matrix, "EverywhereDown")(), "Unacknowledge")
        for d in drivers:
            async def unacknowledged(d: PlatformDriver = d) -> Shown | None:
                shown = await _note(d, "EverywhereDown")()
                return shown if shown and "↩ Unacknowledged by alice" in shown.text else None

            shown = await eventually(unacknowledged, f"the unacknowledgement on {d.platform}")
            assert [label for label, _ in shown.buttons] == ["Acknowledge", "Mute 1h"], (d.platform, shown)
            assert "✅ Acknowledged" not in shown.text, (d.platform, shown)
        edit = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Unacknowledged" in f["text"])
        assert [b["label"] for b in edit["buttons"]] == ["Acknowledge", "Mute 1h"]

        await post_alert(engine, "EverywhereDown", resolved=True)
        for d in drivers:
            async def resolved(d: PlatformDriver = d) -> Shown | None:
                shown = await _note(d, "EverywhereDown")()
                return shown if shown and "Resolved at 00:12 UTC, after 12m" in shown.text else None

            shown = await eventually(resolved, f"the resolve on {d.platform}")
            assert shown.buttons == [] and "Unacknowledged by alice" in shown.text, (d.platform, shown)
        done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
        assert done["buttons"] == []


RUNBOOK = "https://wiki.example.com/runbooks/linked-down"
GRAPH = "http://prometheus.example:9090/graph?g0.expr=up%20%3D%3D%200"
LINKS = [("Runbook", RUNBOOK), ("Source", GRAPH)]


async def _post_linked(engine: Any, status: str) -> None:
    """An Alertmanager alert with a runbook annotation and Prometheus's generatorURL (issue 19's link buttons)."""
    alert: dict[str, Any] = {"status": status, "fingerprint": "fp-linked", "startsAt": "2026-01-01T00:00:00Z",
                             "labels": {"alertname": "LinkedDown", "severity": "critical", "service": "database"},
                             "annotations": {"summary": "LinkedDown on db1", "runbook_url": RUNBOOK},
                             "generatorURL": GRAPH}
    if status == "resolved":
        alert["endsAt"] = "2026-01-01T00:12:00Z"
    body = {"version": "4", "status": status, "receiver": "herald", "groupKey": "linked", "alerts": [alert]}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{engine.port}/hooks/alertmanager", json=body) as response:
        assert response.status == 200, await response.text()


async def _link_elements(telegram: TelegramServer, slack: SlackServer, discord: DiscordServer,
                         people: MatrixPeople, drivers: list[PlatformDriver], hs: Homeserver) -> dict[str, Any]:
    """The notification's links as each platform received them: its own link element, as a client renders it."""
    [tg] = [m for m in telegram.chat_messages(drivers[0].room) if "LinkedDown" in m.text]
    [sl] = [m for m in slack.in_chat(drivers[1].room) if "LinkedDown" in m.text]
    [dc] = [m for m in discord.channel_messages(drivers[2].room) if "LinkedDown" in json.dumps(m.embeds) + m.content]
    blocks = sl.blocks + [b for a in sl.attachments for b in a.get("blocks") or ()]
    matrix = [e for e in await people.timeline(hs.alice, drivers[3].room)
              if e.get("sender") == hs.bot.user_id and "LinkedDown" in str((e.get("content") or {}).get("body"))]
    latest = matrix[-1]["content"]
    latest = latest.get("m.new_content", latest)  # an edit: what clients show is its new content
    return {
        "telegram": [(b["text"], b["url"]) for b in tg.buttons if "url" in b],
        "slack": [(e["text"]["text"], e["url"]) for b in blocks if b.get("type") == "actions"
                  for e in b["elements"] if e.get("type") == "button" and "url" in e],
        "discord": [(c["label"], c["url"]) for c in dc.buttons if c.get("style") == 5 and "custom_id" not in c],
        "matrix": [(label, url) for label, url in LINKS
                   if f'<a href="{html.escape(url)}">{label}</a>' in latest["formatted_body"]
                   and f"\n{label}: {url}" in latest["body"]],
    }


async def test_an_alerts_links_arrive_as_each_platforms_link_element_and_survive_its_edits(
        tmp_path: Path, platforms: tuple[TelegramServer, SlackServer, DiscordServer], homeserver: Homeserver,
        people: MatrixPeople, proxy: MatrixProxy) -> None:
    drivers, config = await _every_platform(tmp_path, platforms, homeserver, people, proxy)
    async with running_engine(config, integrations=discover()) as engine, \
            ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
        await _post_linked(engine, "firing")
        note = await alice.wait_for(lambda f: f["type"] == "notification" and "LinkedDown" in f["text"])
        assert [(link["label"], link["url"]) for link in note["links"]] == LINKS
        for d in drivers:
            await eventually(_note(d, "LinkedDown"), f"the notification on {d.platform}")
        sent = await _link_elements(*platforms, people, drivers, homeserver)
        assert sent == {platform: LINKS for platform in sent}, sent

        await _post_linked(engine, "resolved")  # every message is edited: the links stay, the buttons go
        for d in drivers:
            async def resolved(d: PlatformDriver = d) -> Shown | None:
                shown = await _note(d, "LinkedDown")()
                return shown if shown and "Resolved" in shown.text else None

            await eventually(resolved, f"the resolve on {d.platform}")
        done = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Resolved" in f["text"])
        assert done["buttons"] == [] and [(link["label"], link["url"]) for link in done["links"]] == LINKS
        edited = await _link_elements(*platforms, people, drivers, homeserver)
        assert edited == {platform: LINKS for platform in edited}, edited
