"""What goes out to people, and the registry of platforms that deliver it.

An integration that talks to people (Herald's chat, later Telegram, Slack...) registers an `Outlet`; the runtime
addresses messages by platform and never imports an integration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from engine.core.events import ReplyTo

log = logging.getLogger("herald.outlets")


@dataclass(frozen=True)
class Button:
    id: str
    label: str
    action: str
    arg: str | None = None


@dataclass(frozen=True)
class Notification:
    event_id: str
    rule: str
    text: str
    buttons: tuple[Button, ...] = ()
    severity: str | None = None


@dataclass(frozen=True)
class Audience:
    """Who a team notification reaches: principals (all their sessions) and rooms."""

    team: str
    members: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    run_id: str
    rule: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Result:
    run_id: str
    rule: str
    ok: bool
    text: str
    task_id: str | None = None
    exit_code: int | None = None
    output: str = ""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Output:
    """Lines a running task printed since the last update."""

    run_id: str
    rule: str
    task_id: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


OutMessage = Progress | Result | Output | Text


class Outlet(Protocol):
    platform: str

    async def notify(self, audience: Audience, message: Notification | Text) -> int:
        """Deliver to everyone in `audience` on this platform; return how many sessions got it."""
        ...

    async def reply(self, to: ReplyTo, message: OutMessage) -> bool:
        """Answer the conversation `to`; return False when it can no longer be reached."""
        ...


class Outlets:
    def __init__(self) -> None:
        self._by_platform: dict[str, Outlet] = {}

    def register(self, outlet: Outlet) -> Callable[[], None]:
        if outlet.platform in self._by_platform:
            raise ValueError(f"an outlet for platform {outlet.platform!r} is already registered")
        self._by_platform[outlet.platform] = outlet
        return lambda: self._by_platform.pop(outlet.platform, None)  # type: ignore[func-returns-value]

    async def notify(self, audience: Audience, message: Notification | Text) -> int:
        delivered = 0
        for outlet in list(self._by_platform.values()):
            try:
                delivered += await outlet.notify(audience, message)
            except Exception:
                log.exception("notifying team %s on %s failed", audience.team, outlet.platform)
        return delivered

    async def reply(self, to: ReplyTo | None, message: OutMessage) -> bool:
        if to is None:
            return False
        outlet = self._by_platform.get(to.platform)
        if outlet is None:
            log.warning("no outlet for platform %s; reply dropped", to.platform)
            return False
        try:
            return await outlet.reply(to, message)
        except Exception:
            log.exception("replying on %s failed", to.platform)
            return False
