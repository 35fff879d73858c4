"""The rules' command catalog as integrations see it: each command's name, usage and typed arguments.

A chat platform with native commands (Discord's slash commands, Slack's, Telegram's command menu) registers one per
rule command from `ctx.commands()`, and registers again when `ctx.on_commands_changed(callback)` says a hot reload
changed them. What a person picks there is still sent to the intake as command text (`/backup now`), so the
arguments are bound, validated and permission-checked exactly as for a typed command: the catalog describes, it
never decides.

These are plain frozen dataclasses of the facade, built from the compiled graph here, so a plugin never sees the
compiler's own types (which may change).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from dsl import CommandParam, CompiledRule, EventGraph

log = logging.getLogger("herald.plugin")

# The argument types a rule may declare (`<name: type>`); "choice" is written as its words (`<mode: now|nightly>`).
ARGUMENT_TYPES = ("word", "text", "int", "duration", "user", "option", "choice")

CommandsChanged = Callable[[tuple["CommandInfo", ...]], None]


@dataclass(frozen=True)
class CommandArgument:
    """One typed argument, in the order the command takes them.

    `type` is one of ARGUMENT_TYPES: word (one word), text (the rest of the line; always last), int (a whole
    number), duration (30s, 10m, 1h), user (`@name`), option (a word that may start with '-'), choice (one of
    `choices`). `default` is the text that stands for the argument when an optional one is left out (None: it is
    absent), written so that typing it gives the same value.
    """

    name: str
    type: str
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: str | None = None

    def usage(self) -> str:
        kind = "|".join(self.choices) if self.type == "choice" else self.type
        return f"[<{self.name}: {kind}>]" if self.optional else f"<{self.name}: {kind}>"


@dataclass(frozen=True)
class CommandInfo:
    """A command the rules answer to. `arguments` is empty for an untyped command (its words go to the rules as
    they are); `rules` names the rules it triggers (an unnamed rule by its PATH:LINE); `description` says so in a
    short sentence for a command menu (an unnamed rule by its file's name and line only)."""

    name: str
    arguments: tuple[CommandArgument, ...]
    rules: tuple[str, ...]
    description: str = ""

    @property
    def usage(self) -> str:
        return " ".join([f"/{self.name}", *(argument.usage() for argument in self.arguments)])


def command_catalog(graph: EventGraph) -> tuple[CommandInfo, ...]:
    """Every rule command of `graph`, by name (every rule of one command declares the same arguments: a compile
    check, so the first rule's are the command's)."""
    return tuple(
        CommandInfo(name=name, arguments=tuple(_argument(param) for param in rules[0].params),
                    rules=tuple(rule.name for rule in rules), description=_description(rules))
        for name, rules in sorted(graph.commands().items())
    )


def _description(rules: Sequence[CompiledRule]) -> str:
    names = [PurePath(rule.name).name if rule.name == rule.location else rule.name for rule in rules]
    return ("Runs rule " if len(names) == 1 else "Runs rules ") + ", ".join(names)


def _argument(param: CommandParam) -> CommandArgument:
    default = param.default
    text: str | None = None
    if default is not None:
        # A duration's default is kept in seconds (a float of whole seconds); "90s" binds to the same value.
        text = f"{int(default)}s" if param.type == "duration" and isinstance(default, float) else str(default)
    return CommandArgument(param.name, param.type, tuple(param.choices), param.optional, text)


class CommandCatalog:
    """The current catalog, and the callbacks to tell when a reload changes it (attach returns detach)."""

    def __init__(self, graph: EventGraph) -> None:
        self.current = command_catalog(graph)
        self._listeners: list[CommandsChanged] = []

    def subscribe(self, callback: CommandsChanged) -> Callable[[], None]:
        self._listeners.append(callback)

        def detach() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return detach

    def update(self, graph: EventGraph) -> bool:
        """Take the commands of a newly swapped-in graph; call the listeners if they differ. True if they did."""
        catalog = command_catalog(graph)
        if catalog == self.current:
            return False
        self.current = catalog
        for callback in list(self._listeners):
            try:
                callback(catalog)
            except Exception:  # one integration's bug must not undo a reload or starve the others
                log.exception("a commands-changed callback failed")
        return True
