"""Driving Loopchat as its people would, and installing the test connector through the entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.plugin import ENTRY_POINT_GROUP
from engine.testing.conformance import Shown
from tests.connectors.loopchat_server import LoopchatServer


@contextmanager
def installed_plugin(tmp: Path, name: str, target: str) -> Iterator[Path]:
    """Make `target` (module:attribute) an installed plugin named `name`, exactly as pip would register it: a
    distribution's metadata with an entry point in Herald's group, on sys.path. Yields the folder (put it on a
    subprocess's PYTHONPATH to install the plugin there too)."""
    site = tmp / "site"
    info = site / f"herald_test_{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: herald-test-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))


class LoopchatDriver:
    """The conformance kit's view of Loopchat: people talk to the bot through the server's own update queue."""

    platform = "loopchat"
    admin = "U100"
    viewer = "U200"
    room = "-100ops"

    def __init__(self, server: LoopchatServer) -> None:
        self.server = server

    def direct_chat(self, account: str) -> str:
        return account  # as on Telegram: a private chat's id is the user's id

    async def say(self, account: str, chat: str, text: str) -> None:
        self.server.inject_text(account, chat, text)

    async def press(self, account: str, chat: str, message: Shown, label: str) -> None:
        payload = next(data for shown_label, data in message.buttons if shown_label == label)
        self.server.inject_press(account, int(message.id), payload)

    async def shown(self, chat: str) -> list[Shown]:
        return [Shown(id=str(m.message_id), text=m.text, edits=m.edits,
                      buttons=[(b["text"], b["callback_data"]) for b in m.buttons])
                for m in self.server.chat_messages(chat)]

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        self.server.rate_limit_next(retry_after_s)

    async def drop_inbound(self) -> None:
        self.server.go_down(1.0)  # the long poll in flight and the next ones fail; the connector must recover


class MemoryStore:
    """An integration's key-value store (engine.plugin.KeyValue) in memory, for connector tests without an engine."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        self.values[key] = value
