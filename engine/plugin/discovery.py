"""The integration plugin API, and discovery through the `herald.integrations` entry-point group.

Built-in integrations are found exactly like third-party ones, so a plugin author sees what we use. An integration
that fails to import is disabled with a clear message; the others still load.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

from aiohttp import web

from engine.core.config import Config
from engine.core.events import Actor, Event, ReplyTo
from engine.delivery.outlets import Outlet
from engine.security.identity import Directory

log = logging.getLogger("herald.plugins")

ENTRY_POINT_GROUP = "herald.integrations"

Unload = Callable[[], Awaitable[None]]
Acknowledge = Callable[[Sequence[Event]], Awaitable[object]]


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    provides: tuple[str, ...]  # e.g. ("trigger:alert",) or ("chat", "trigger:command", "trigger:button")


class Busy(RuntimeError):
    """The engine cannot accept more work right now; the sender should retry later."""


class IntegrationContext(Protocol):
    """What the engine offers an integration."""

    config: Config
    directory: Directory
    routes: web.UrlDispatcher

    async def submit(self, events: Sequence[Event], *, acknowledge: Acknowledge | None = None) -> None:
        """Durably accept events (all or none); when this returns, the sender may be told "accepted".

        `acknowledge`, if given, is awaited after the events are durable and before any rule sees them, so a
        sender's "accepted" always arrives before progress about the same event.
        """
        ...

    async def press(
        self, button_id: str, actor: Actor, reply_to: ReplyTo | None, *, acknowledge: Acknowledge | None = None
    ) -> Event:
        """Turn a press of a button Herald sent into an accepted button event.

        Raises engine.errors.AuthError (audited) for a forged, altered, expired or replayed button.
        """
        ...

    def register_outlet(self, outlet: Outlet) -> Callable[[], None]:
        """Let the runtime deliver notifications and replies through this integration; returns the detach."""
        ...


class Integration(Protocol):
    manifest: Manifest

    async def setup(self, ctx: IntegrationContext) -> Unload:
        """Attach to the engine; return the coroutine function that detaches again."""
        ...


def discover() -> list[Integration]:
    """Load every integration registered under the entry-point group, in name order."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            integration = ep.load()
        except Exception as exc:  # one broken plugin must not take the others down
            log.error("integration %s is disabled: it failed to load (%s: %s)", ep.name, type(exc).__name__, exc)
            continue
        found.append(integration)
    if not found:
        log.warning("no integrations found in entry-point group %s: is Herald installed (pip install -e .)?",
                    ENTRY_POINT_GROUP)
    return found
