"""Slash commands: one Discord application command per rule command, and an interaction read back as command text.

Herald registers the rules' commands (`ctx.commands()`) with their typed arguments as options, plus the generic
`/herald text:...` that carries any command (the built-ins, and a rule command Discord cannot show). Registration
is one bulk overwrite of the application's commands in the scope (`PUT /applications/{app}/guilds/{guild}/commands`,
or `/applications/{app}/commands` globally), so commands the rules dropped disappear. It runs at start and again
after a hot reload that changed the catalog, and only when what would be sent differs from what was registered (a
hash of the scope and the body).

Options follow the argument types: a choice is a STRING with `choices`, an int an INTEGER, the rest (word, text,
duration, user, option) STRING. A command that declares no arguments takes any words: it gets one optional STRING
option, `args`, whose text follows the command as typed. What a person picks is never trusted as typed:
`/backup mode:now` becomes the text `/backup now` and goes to the intake, so the rule's own argument checks and
permission checks decide, exactly as for a typed command. A command Discord's limits cannot take (an uppercase
name, more than 25 options or choices, the name `herald`) is left out with a warning naming it, and stays usable
as `/herald text:...`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.plugin import CommandArgument, CommandInfo, DeliveryError, RateLimited
from integrations.discord.rest import DiscordRejected, DiscordRest

log = logging.getLogger("herald.discord")

COMMAND = "herald"  # the generic command: /herald text:<a Herald command without its slash>
CHAT_INPUT, STRING, INTEGER = 1, 3, 4
MAX_COMMANDS, MAX_OPTIONS, MAX_CHOICES, MAX_DESCRIPTION, MAX_CHOICE = 100, 25, 25, 100, 100
# Discord's naming rule is ^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$, lowercase where a letter has a lowercase form;
# Herald's names are ASCII letters, digits, '-' and '_', so this is the same test for them.
NAME = re.compile(r"[-_a-z0-9]{1,32}")
GENERIC = {"name": COMMAND, "type": CHAT_INPUT,
           "description": "Run a Herald command, e.g. backup now, help, link TOKEN",
           "options": [{"name": "text", "type": STRING, "required": True,
                        "description": "the command and its arguments, e.g. backup now"}]}
GLOBAL_ONLY = {"contexts": [0, 1], "integration_types": [0]}  # guild channels and the bot's direct messages
RETRY_MAX_S = 60.0
UNTYPED = {"name": "args", "type": STRING, "required": False,
           "description": "the command's words, as you would type them"}

_TYPE_WORDS = {"word": "one word", "text": "the rest of the line", "int": "a whole number",
               "duration": "a duration such as 30s, 10m or 1h", "user": "a person, such as @alice",
               "option": "one word (may start with -)"}


class SlashProblem(ValueError):
    """An interaction that cannot be read as a Herald command; the message is for the person."""


def application_commands(catalog: Sequence[CommandInfo], *, scope_global: bool) -> list[dict[str, Any]]:
    """The bulk-overwrite body: /herald, then one command per rule command Discord can take (warning for the rest)."""
    commands = [GENERIC]
    for info in catalog:
        problem = _unmappable(info)
        if problem is None and len(commands) >= MAX_COMMANDS:
            problem = f"Discord allows {MAX_COMMANDS} commands per scope"
        if problem is not None:
            log.warning("discord: /%s is not registered as a slash command (%s); use /herald text:%s ...",
                        info.name, problem, info.name)
            continue
        options = [_option(argument) for argument in info.arguments] if info.arguments else [UNTYPED]
        commands.append({"name": info.name, "type": CHAT_INPUT, "description": _clip(info.description),
                         "options": options})
    return [command | GLOBAL_ONLY for command in commands] if scope_global else commands


def _unmappable(info: CommandInfo) -> str | None:
    if info.name == COMMAND:
        return "the name is Herald's generic command"
    if not NAME.fullmatch(info.name):
        return "Discord command names are 1-32 lowercase letters, digits, '-' or '_'"
    if len(info.arguments) > MAX_OPTIONS:
        return f"more than {MAX_OPTIONS} arguments"
    for argument in info.arguments:
        if not NAME.fullmatch(argument.name):
            return f"the argument name '{argument.name}' is not 1-32 lowercase letters, digits, '-' or '_'"
        if len(argument.choices) > MAX_CHOICES:
            return f"'{argument.name}' has more than {MAX_CHOICES} choices"
        if any(len(choice) > MAX_CHOICE for choice in argument.choices):
            return f"a choice of '{argument.name}' is longer than {MAX_CHOICE} characters"
    return None


def _option(argument: CommandArgument) -> dict[str, Any]:
    if argument.type == "choice":
        what = "one of " + ", ".join(argument.choices)
    else:
        what = _TYPE_WORDS.get(argument.type, argument.type)
    if argument.default is not None:
        what += f" (default {argument.default})"
    option: dict[str, Any] = {"name": argument.name, "type": INTEGER if argument.type == "int" else STRING,
                              "description": _clip(what), "required": not argument.optional}
    if argument.type == "choice":
        option["choices"] = [{"name": choice, "value": choice} for choice in argument.choices]
    return option


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


def command_text(data: Mapping[str, Any], catalog: Sequence[CommandInfo]) -> str:
    """The Herald command an interaction stands for: `/herald text:backup now` and `/backup mode:now` are both
    `/backup now`. The options are put in the order the rule's arguments take them (Discord sends them in the
    order they were filled in); a left-out optional argument before a given one stands as its default. Raises
    SlashProblem when the text would not say what the person picked (a left-out argument with no default before a
    given one; several words in an option that is one word)."""
    given = {str(o.get("name")): o.get("value") for o in data.get("options") or [] if isinstance(o, dict)}
    name = str(data.get("name", ""))
    if name == COMMAND:
        return "/" + str(given.get("text") or "help").strip().lstrip("/")
    info = next((c for c in catalog if c.name == name), None)
    if info is None:  # dropped by a reload Discord has not caught up with: the intake says it is unknown
        return " ".join([f"/{name}", *(str(v) for v in given.values())])
    if not info.arguments:
        return " ".join([f"/{name}", *([str(given["args"])] if "args" in given else [])])
    words, skipped = [f"/{name}"], []
    for argument in info.arguments:
        if argument.name not in given:
            skipped.append(argument)
            continue
        for left_out in skipped:
            if left_out.default is None:
                raise SlashProblem(f"/{name}: give {left_out.name} as well when you give {argument.name} "
                                   "(the arguments are taken in order)")
            words.append(left_out.default)
        skipped = []
        value = str(given[argument.name])
        if argument.type != "text" and (not value or len(value.split()) != 1):
            # Typed, it would be read as several arguments (or none): the person meant one.
            raise SlashProblem(f"/{name}: {argument.name} is one word, not '{value}'")
        words.append(value)
    return " ".join(words)


class CommandRegistrar:
    """Keeps the application's commands in the scope equal to the catalog: registers at start, and again whenever
    `changed()` is called (the facade's commands-changed callback) and the body to send differs."""

    def __init__(self, rest: DiscordRest, application_id: str, guild_id: str | None,
                 catalog: Callable[[], Sequence[CommandInfo]]) -> None:
        self._rest = rest
        self._path = f"/applications/{application_id}" + (f"/guilds/{guild_id}" if guild_id else "") + "/commands"
        self._global = guild_id is None
        self._catalog = catalog
        self._wanted = asyncio.Event()
        self._wanted.set()
        self.registered: str | None = None  # the hash of what Discord holds now (as far as Herald knows)

    def changed(self, _catalog: object = None) -> None:
        self._wanted.set()

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            body = application_commands(self._catalog(), scope_global=self._global)
            try:
                await self._put(body)
            except RateLimited as exc:  # as for every call: wait what Discord says, then send the newest body
                await self._retry(exc.retry_after_s)
            except DiscordRejected as exc:
                log.error("discord: registering the slash commands failed: %s (is application_id right, and was "
                          "the bot invited with the applications.commands scope?)", exc)
                if exc.status == 400 and len(body) > 1:  # a body Discord will not take: keep /herald usable
                    await self._fall_back(body[:1])
            except DeliveryError as exc:
                failures += 1
                log.warning("discord: registering the slash commands failed (%s); retrying", exc)
                await self._retry(min(RETRY_MAX_S, 2.0 ** failures))
            else:
                failures = 0

    async def _put(self, body: list[dict[str, Any]]) -> None:
        """Overwrite the scope's commands with `body`, unless that is what Discord already holds."""
        digest = hashlib.sha256(json.dumps([self._path, body], sort_keys=True).encode()).hexdigest()
        if digest == self.registered:
            return
        await self._rest.call("PUT", self._path, json=body, route=f"PUT {self._path}")
        self.registered = digest
        log.info("discord: %d slash commands registered (%s)", len(body),
                 "globally" if self._global else "in the guild")

    async def _fall_back(self, body: list[dict[str, Any]]) -> None:
        try:
            await self._put(body)
        except DeliveryError as exc:
            log.error("discord: registering /herald alone failed too: %s", exc)
        else:
            log.warning("discord: only /herald is registered until the rules' commands change")

    async def _retry(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._wanted.set()
