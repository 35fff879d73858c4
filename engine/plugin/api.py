"""What an integration is and what the engine offers it.

An integration has a `Manifest` (its name, its pydantic config model, validated when the config loads, so
`herald check` reports `integrations.telegram.token: field required` before anything starts; the trigger kinds it
provides; and, for a chat platform, its `ConnectorSpec`) and a `setup(ctx)` that attaches it and returns the
coroutine function that detaches it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from engine.core.config import Config
from engine.core.events import Actor, Event, ReplyTo
from engine.delivery.connector import Connector
from engine.delivery.message import Capabilities
from engine.delivery.outbox import Outgoing
from engine.intake.intake import Intake
from engine.plugin.commands import CommandInfo, CommandsChanged
from engine.security.identity import Directory

Unload = Callable[[], Awaitable[None]]
Acknowledge = Callable[[Sequence[Event]], Awaitable[object]]


@dataclass(frozen=True)
class ConnectorSpec:
    """What the compiler and the config need to know of a chat platform before anything runs."""

    platform: str
    # The canonical form of an address on this platform, or engine.delivery.connector.AddressError saying why not.
    parse_address: Callable[[str], str]
    capabilities: Capabilities = field(default_factory=Capabilities)


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    provides: tuple[str, ...] = ()  # e.g. ("trigger:alert",) or ("trigger:command", "trigger:button")
    config_model: type[BaseModel] | None = None  # `[integrations.<name>]`, validated when the config loads
    connector: ConnectorSpec | None = None
    # How the integration turns what its source posts into events, without the engine (the dry run, `herald test`,
    # reads an alert exactly as the live hook would); raises ValueError for a body it cannot read.
    decode: Callable[[dict[str, Any]], list[Event]] | None = None
    # The sources it reads alerts from, by name, given its validated config section (None without one): how each
    # turns a parsed body into events, so `herald test SOURCE BODY.json` reads a saved body as the live route would.
    # Each reader raises ValueError (pydantic's ValidationError is one) for a body it cannot read.
    sources: Callable[[BaseModel | None], Mapping[str, Callable[[Any], list[Event]]]] | None = None
    # A platform that cannot run without its credentials (Telegram, Slack...): set up, and its config validated,
    # only when the config has an `[integrations.<name>]` section; installed but unconfigured, it stays off.
    needs_config: bool = False


class KeyValue(Protocol):
    """An integration's small durable store (offsets, session ids, rotated tokens): durable once `put` returns."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        """Store `value` under `key`; with `ttl_s`, it is gone (read as None, then deleted) after that long."""
        ...


class IntegrationContext(Protocol):
    """What the engine offers an integration."""

    @property
    def config(self) -> Config: ...
    @property
    def directory(self) -> Directory: ...
    @property
    def routes(self) -> web.UrlDispatcher: ...
    @property
    def intake(self) -> Intake:
        """Commands, messages and presses from people: one path for every platform."""
        ...

    async def submit(self, events: Sequence[Event], *, acknowledge: Acknowledge | None = None) -> None:
        """Durably accept events (all or none); when this returns, the sender may be told "accepted".

        `acknowledge`, if given, is awaited after the events are durable and before any rule sees them, so a
        sender's "accepted" always arrives before progress about the same event. Raises Busy when overloaded.
        """
        ...

    async def press(
        self, handle: str, actor: Actor, reply_to: ReplyTo | None, *, acknowledge: Acknowledge | None = None
    ) -> Event:
        """Turn a press of a button Herald sent (its short handle) into an accepted button event.

        Raises engine.core.errors.AuthError (audited) for an unknown, expired or already used button.
        """
        ...

    def register_connector(self, connector: Connector) -> Callable[[], Awaitable[None]]:
        """Deliver notifications and replies for `connector.platform` through it; returns the detach."""
        ...

    def integration_config(self, name: str) -> BaseModel | None:
        """The validated `[integrations.<name>]` section (an instance of the manifest's config model)."""
        ...

    def spawn(self, name: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a background task owned by the engine: cancelled and awaited when the engine stops."""
        ...

    @property
    def http(self) -> aiohttp.ClientSession:
        """One shared HTTP client session for every integration."""
        ...

    def store(self, namespace: str) -> KeyValue:
        ...

    async def history(self, platform: str, chats: Iterable[str], *, after: int, limit: int) -> list[Outgoing]:
        """What the outbox holds for these conversations after outbox number `after`, oldest first (the newest
        `limit`): for a connector that catches clients up on what they missed while disconnected."""
        ...

    def now(self) -> float:
        """The engine's clock (seconds since the epoch; tests move it)."""
        ...

    def commands(self) -> tuple[CommandInfo, ...]:
        """The commands the running rules answer to, by name, with their typed arguments (for platforms that
        register native commands: Discord's slash commands). Built-in commands (/help, /link...) are not in it."""
        ...

    def on_commands_changed(self, callback: CommandsChanged) -> Callable[[], None]:
        """Call `callback(catalog)` after a hot reload that changed `commands()` (a command added, removed, or its
        arguments changed; not on a reload that left them as they were). It runs in the event loop, right after
        the swap, so it must not block: set an event and do the work in a task of your own. Returns the detach."""
        ...


class Integration(Protocol):
    manifest: Manifest

    async def setup(self, ctx: IntegrationContext) -> Unload:
        """Attach to the engine; return the coroutine function that detaches again."""
        ...
