"""Discord slash commands made from the rules' commands, against the fake Discord (real HTTP and WebSocket on loopback).

The rules' commands are registered (one bulk overwrite) with their typed arguments as options; a person's pick comes
back as the command text and meets the rule's own argument and permission checks; a hot reload that changes the
commands registers again (and one that does not, does not); a 429 on the registration is waited out; and the
conformance kit passes with every rule command run as its own slash command.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config
from engine.plugin import discover
from engine.testing import running_engine
from engine.testing.conformance import check_connector, eventually
from integrations.discord import integration
from tests.connectors.discord_server import DiscordServer, Posted
from tests.connectors.test_discord import ADMIN, ROOM, VIEWER, DiscordDriver, settings

RULES = """\
rule backup-now:
  on command backup <mode: now|nightly> [<keep: int = 3>]
  require role admin
  reply "backup {command.mode}, keeping {command.keep}"

rule deploy:
  on command deploy <service: word> [<note: text>]
  require role admin
  reply "deploying {command.service}"

on command ping reply "pong"
on command note [<who: word>] [<what: text>] reply "noted"
on command LOUD reply "no slash command can be named LOUD"
"""
MANY = " ".join(f"c{n}" for n in range(26))  # one choice more than Discord allows
RULES_AFTER = RULES.replace('on command ping reply "pong"\n', f'on command pick <what: {MANY.replace(" ", "|")}> '
                            'reply "picked"\non command status reply "up"\n')


@pytest.fixture
async def discord() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


@asynccontextmanager
async def engine_with(tmp_path: Path, server: DiscordServer, rules_text: str, **extra: Any) -> AsyncIterator[Any]:
    server.guild_channel(ROOM)
    rules = Path(tempfile.mkdtemp(prefix="herald-discord-commands-", dir="/tmp"))
    (rules / "ops.rules").write_text(rules_text)
    config = Config.model_validate({
        "data_dir": str(tmp_path / "data"), "rules_dir": str(rules), "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": [f"discord:{ADMIN}"]}},
        "integrations": {"discord": settings(server, **extra)},
    }).resolved(tmp_path)
    try:
        async with running_engine(config, integrations=discover()) as engine:
            yield engine
    finally:
        shutil.rmtree(rules, ignore_errors=True)


def names(server: DiscordServer, scope: str) -> list[str]:
    return [c["name"] for c in server.commands.get(scope, [])]


def answer_to(server: DiscordServer, interaction: str) -> list[Posted]:
    return [m for m in server.messages.values() if m.interaction == interaction]


async def _shows(server: DiscordServer, interaction: str, text: str) -> bool:
    return any(text in message.content for message in answer_to(server, interaction))


async def _contents(server: DiscordServer, interaction: str) -> list[str]:
    return [message.content for message in answer_to(server, interaction)]


async def test_rule_commands_are_registered_with_their_arguments_as_options(
        tmp_path: Path, discord: DiscordServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "herald.discord")
    async with engine_with(tmp_path, discord, RULES, guild_id=discord.guild_id):
        await eventually(lambda: _registered(discord, discord.guild_id), "the guild's commands")
    assert "global" not in discord.commands, "a guild_id was configured: nothing is registered globally"
    commands = {c["name"]: c for c in discord.commands[discord.guild_id]}
    assert list(commands) == ["herald", "backup", "deploy", "note", "ping"]
    assert commands["backup"]["description"] == "Runs rule backup-now"
    assert [(o["name"], o["type"], o["required"], o.get("choices")) for o in commands["backup"]["options"]] == [
        ("mode", 3, True, [{"name": "now", "value": "now"}, {"name": "nightly", "value": "nightly"}]),
        ("keep", 4, False, None)]
    assert "default 3" in commands["backup"]["options"][1]["description"]
    assert [(o["name"], o["type"], o["required"]) for o in commands["deploy"]["options"]] == [
        ("service", 3, True), ("note", 3, False)]
    assert [(o["name"], o["required"]) for o in commands["ping"]["options"]] == [("args", False)]  # untyped
    assert "contexts" not in commands["backup"], "contexts are for global commands only"
    assert "/LOUD is not registered as a slash command" in caplog.text and "lowercase" in caplog.text


async def _registered(server: DiscordServer, scope: str) -> bool:
    return "backup" in names(server, scope)


async def test_a_slash_command_runs_through_the_rules_checks(tmp_path: Path, discord: DiscordServer) -> None:
    async with engine_with(tmp_path, discord, RULES):
        await eventually(lambda: _registered(discord, "global"), "the commands")
        ran = await discord.run_command(ADMIN, ROOM, "backup", mode="nightly")
        defaulted = await discord.run_command(ADMIN, ROOM, "backup", keep=7, mode="now")  # filled in any order
        refused = await discord.run_command(ADMIN, ROOM, "deploy", service="-rf")
        stranger = await discord.run_command(VIEWER, ROOM, "backup", mode="now")
        untyped = await discord.run_command(ADMIN, ROOM, "ping")
        with pytest.raises(AssertionError, match="required option service"):  # the client does not send it
            await discord.run_command(ADMIN, ROOM, "deploy", note="friday")
        gap = await discord.run_command(ADMIN, ROOM, "note", what="hello")  # `who` left out, before `what`
        spaced = await discord.run_command(ADMIN, ROOM, "deploy", service="web --force")  # not two arguments
        for interaction, text in ((ran, "backup nightly, keeping 3"), (defaulted, "backup now, keeping 7"),
                                  (refused, "service may not start with '-'"),  # Herald's own refusal
                                  (stranger, "needs an account linked to a person"), (untyped, "pong"),
                                  (gap, "/note: give who as well"),
                                  (spaced, "/deploy: service is one word, not 'web --force'")):
            await eventually(functools.partial(_shows, discord, interaction, text),
                             f"{text!r} in answer to a slash command",
                             seen=functools.partial(_contents, discord, interaction))
    assert all(discord.interactions[i].response == 5 for i in (ran, refused, stranger))  # journaled, then answered
    [said] = answer_to(discord, gap)  # nothing taken: the person is told why, privately
    assert discord.interactions[gap].response == discord.interactions[spaced].response == 4 and said.flags & 64
    assert said.content == "/note: give who as well when you give what (the arguments are taken in order)"


async def test_a_reload_that_changes_the_commands_registers_them_again(
        tmp_path: Path, discord: DiscordServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "herald.discord")
    guild = discord.guild_id
    async with engine_with(tmp_path, discord, RULES, guild_id=guild) as engine:
        await eventually(lambda: _registered(discord, guild), "the first registration")
        first = {c["name"]: c["id"] for c in discord.commands[guild]}
        rules = engine.config.rules_dir / "ops.rules"

        rules.write_text(RULES + "\non alert notify ops\n")  # the commands stay as they were
        assert (await engine.reload()).status == "reloaded"
        discord.rate_limit_next("commands", 0.2)  # the next overwrite meets a 429 and waits it out
        rules.write_text(RULES_AFTER)  # ping removed; status added; pick has 26 choices (left out)
        assert (await engine.reload()).status == "reloaded"

        async def updated() -> bool:
            return names(discord, guild) == ["herald", "backup", "deploy", "note", "status"]

        await eventually(updated, "the commands after the reload", seen=lambda: _names(discord, guild))
        said = await discord.run_command(ADMIN, ROOM, "status")
        await eventually(lambda: _shows(discord, said, "up"), "the new command's answer")
        with pytest.raises(AssertionError, match="/ping is not registered"):
            await discord.run_command(ADMIN, ROOM, "ping")
    assert [scope for scope, _ in discord.registrations] == [guild, guild], "one overwrite per change of commands"
    assert discord.limited == ["PUT /api/v10/applications/{app}/guilds/{guild}/commands"]
    assert discord.early_calls == 0
    assert {c["name"]: c["id"] for c in discord.commands[guild]}["backup"] == first["backup"], "kept its id"
    assert "/pick is not registered as a slash command ('what' has more than 25 choices)" in caplog.text


async def _names(server: DiscordServer, scope: str) -> list[str]:
    return names(server, scope)


async def test_the_fake_refuses_what_discord_refuses(discord: DiscordServer) -> None:
    url = f"{discord.api_url}/applications/{discord.application_id}/commands"
    bad = [{"name": "Backup", "type": 1, "description": "x"},
           {"name": "ok", "type": 1, "description": ""},
           {"name": "opts", "type": 1, "description": "x", "options": [
               {"name": "a", "type": 3, "description": "x"},
               {"name": "b", "type": 3, "description": "x", "required": True},
               {"name": "c", "type": 5, "description": "x", "choices": [{"name": "y", "value": "y"}]},
               {"name": "d", "type": 4, "description": "x", "choices": [{"name": "y", "value": "y"}]}]}]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {discord.token}"}) as http:
        async with http.put(url, json=bad) as response:
            assert response.status == 400
            body = await response.json()
        async with http.put(url, json=[{"name": "ok", "type": 1, "description": "x"}] * 2) as response:
            duplicate = await response.json()
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"
    errors = body["errors"]
    assert errors["0"]["name"]["_errors"][0]["code"] == "APPLICATION_COMMAND_INVALID_NAME"
    assert "description" in errors["1"]
    assert set(errors["2"]["options"]) == {"1", "2", "3"}  # required after optional; choices on a boolean; bad value
    assert duplicate["errors"]["1"]["name"]["_errors"][0]["code"] == "APPLICATION_COMMANDS_DUPLICATE_NAME"
    assert discord.commands == {} and discord.registrations == [], "a refused overwrite changes nothing"


class NativeSlashDriver(DiscordDriver):
    """A person who runs every command the rules registered as its own slash command (`/backup args:now`), and the
    rest (/whoami, /link) through /herald."""

    async def say(self, account: str, chat: str, text: str) -> None:
        name, _, rest = text.removeprefix("/").partition(" ")
        registered = {c["name"]: c for c in self.server.commands.get("global", [])}
        if not text.startswith("/") or name not in registered or name == "herald":
            await super().say(account, chat, text)
            return
        declared = [o["name"] for o in registered[name].get("options") or []]
        words = rest.split()
        picked = {"args": rest} if declared == ["args"] else dict(zip(declared, words, strict=False))
        await self.server.run_command(account, chat, name, **({k: v for k, v in picked.items() if v}))


async def test_conformance_with_rule_commands_as_slash_commands(tmp_path: Path, discord: DiscordServer) -> None:
    await check_connector(tmp_path, integration, NativeSlashDriver(discord, slash=True), settings(discord))
    backups = [i for i in discord.interactions.values() if i.payload["data"].get("name") == "backup"]
    assert backups and all(i.payload["data"]["options"] == [{"name": "args", "type": 3, "value": "now"}]
                           for i in backups)
    assert discord.early_calls == 0


async def test_a_body_discord_refuses_leaves_herald_registered(
        tmp_path: Path, discord: DiscordServer, caplog: pytest.LogCaptureFixture) -> None:
    discord.refuse_names = {"deploy"}  # whatever Discord's reason, /herald must stay usable
    async with engine_with(tmp_path, discord, RULES, guild_id=discord.guild_id):
        async def herald_alone() -> bool:
            return names(discord, discord.guild_id) == ["herald"]

        await eventually(herald_alone, "/herald registered alone")
        said = await discord.slash(ADMIN, ROOM, "backup now")
        await eventually(lambda: _shows(discord, said, "backup now, keeping 3"), "the answer through /herald")
    assert "registering the slash commands failed" in caplog.text and "Invalid Form Body" in caplog.text


async def test_a_slash_command_over_http_interactions_is_read_the_same_way(
        tmp_path: Path, discord: DiscordServer) -> None:
    async with engine_with(tmp_path, discord, RULES, public_key=discord.public_key) as engine:
        await eventually(lambda: _registered(discord, "global"), "the commands")
        discord.interactions_url = f"http://127.0.0.1:{engine.port}/hooks/discord/interactions"
        ran = await discord.run_command(ADMIN, ROOM, "backup", mode="now")
        gap = await discord.run_command(ADMIN, ROOM, "note", what="hello")
        await eventually(lambda: _shows(discord, ran, "backup now, keeping 3"), "the answer to /backup")
    assert discord.interactions[ran].over_http and discord.interactions[ran].response == 5
    assert discord.interactions[gap].over_http and discord.interactions[gap].response == 4  # the refusal, at once
    assert discord.http_answers == [200, 200]
