"""The connector conformance kit: the scenario every chat connector must pass against its platform's server.

A platform's tests give the kit a `PlatformDriver` (what a person on that platform does and sees, through the
platform's fake or real server) and the connector's integration; the kit starts a real engine with that integration
beside Herald's own, with these people and rules:

    alice  admin   accounts = ["<platform>:<driver.admin>"]
    bob    viewer  accounts = ["<platform>:<driver.viewer>"]
    team ops       targets = ["<platform>:<driver.room>"]

    on alert notify ops with buttons
    on command backup require role admin run backup.sh sandboxed

and checks, through the platform only:
1. a notification with buttons reaches the room once, even though the platform answered the first send with a 429;
2. pressing Acknowledge is acknowledged, applied (the alert is acknowledged by alice) and the message is edited;
3. `/backup now` from alice shows progress (one message, edited) and ends with the script's result;
4. `/backup now` from bob is denied, and nothing runs;
5. a dropped inbound connection mid-stream loses nothing: what is said after it is still handled, and every
   notification sent meanwhile arrives.

Buttons a platform carries are at most 64 bytes (Herald's short handles). Use it from a test:

    async def test_my_platform_conforms(tmp_path):
        async with MyFakeServer() as server:
            await check_connector(tmp_path, integration, MyDriver(server), {"api_url": server.url})
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from engine.core.config import Config
from engine.plugin import Integration, discover

MAX_BUTTON_BYTES = 64
BACKUP_SCRIPT = """#!/bin/sh
echo "backup ($1) started"
echo "backup finished"
"""
RULES = """\
on alert notify ops with buttons
on command backup require role admin run backup.sh sandboxed
"""


@dataclass
class Shown:
    """A message as a person sees it on the platform now (after any edits)."""

    id: str
    text: str
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (label, the payload the platform carries)
    edits: int = 0


class PlatformDriver(Protocol):
    platform: str
    admin: str  # the account id of a person the kit makes an admin
    viewer: str  # the account id of a person with no role that may run /backup
    room: str  # the chat the team `ops` targets

    async def say(self, account: str, chat: str, text: str) -> None:
        """The person `account` writes `text` in `chat` (a group, or their direct chat with the bot)."""
        ...

    async def press(self, account: str, chat: str, message: Shown, label: str) -> None:
        """The person presses the button labelled `label` under `message`."""
        ...

    async def shown(self, chat: str) -> list[Shown]:
        """Every message the bot has in `chat`, oldest first, as shown now."""
        ...

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        """The platform answers the next send with its rate-limit error (HTTP 429 and its retry-after)."""
        ...

    async def drop_inbound(self) -> None:
        """Break the connection the bot receives on (a socket closed, a long poll cut), once."""
        ...

    def direct_chat(self, account: str) -> str:
        """Where the bot and this person talk one to one (the chat a command from them is answered in)."""
        ...


def kit_config(tmp: Path, driver: PlatformDriver, integration_name: str, integration_config: dict[str, Any],
               *, port: int = 0) -> Config:
    """The kit's installation in `tmp`: people, team, rules and the backup script (readable by the sandbox)."""
    rules = Path(tempfile.mkdtemp(prefix="herald-kit-rules-", dir="/tmp"))
    (rules / "scripts").mkdir()
    (rules / "kit.rules").write_text(RULES)
    (rules / "scripts" / "backup.sh").write_text(BACKUP_SCRIPT)
    for path in (rules, rules / "scripts", rules / "kit.rules", rules / "scripts" / "backup.sh"):
        os.chmod(path, 0o755 if path.is_dir() or path.suffix == ".sh" else 0o644)
    p = driver.platform
    raw = {
        "data_dir": str(tmp / "data"), "rules_dir": str(rules), "http": {"port": port},
        "principals": {"alice": {"roles": ["admin"], "accounts": [f"{p}:{driver.admin}"]},
                       "bob": {"roles": ["viewer"], "accounts": [f"{p}:{driver.viewer}"]}},
        "teams": {"ops": {"targets": [f"{p}:{driver.room}"]}},
        "integrations": {integration_name: integration_config},
    }
    return Config.model_validate(raw).resolved(tmp)


@asynccontextmanager
async def kit_engine(config: Config, integrations: Sequence[Integration]) -> AsyncIterator[Any]:
    from engine.testing import running_engine  # noqa: PLC0415 - the kit is importable without the engine started

    try:
        async with running_engine(config, integrations=integrations) as engine:
            yield engine
    finally:
        shutil.rmtree(config.rules_dir, ignore_errors=True)


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 30.0,
                     seen: Callable[[], Awaitable[Any]] | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` was awaited, and what `seen` shows."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    if seen is not None:
        last = await seen()
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (seen: {last!r})")


async def post_alert(engine: Any, name: str, *, severity: str = "critical", resolved: bool = False) -> None:
    status = "resolved" if resolved else "firing"
    alert = {"status": status, "labels": {"alertname": name, "severity": severity, "service": "database"},
             "annotations": {"summary": f"{name} on db1"}, "fingerprint": f"fp-{name}",
             "startsAt": "2026-01-01T00:00:00Z"}
    if resolved:
        alert["endsAt"] = "2026-01-01T00:12:00Z"
    body = {"version": "4", "status": status, "receiver": "herald", "groupKey": name, "alerts": [alert]}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{engine.port}/hooks/alertmanager", json=body) as response:
        assert response.status == 200, await response.text()


async def check_connector(tmp: Path, integration: Integration, driver: PlatformDriver,
                          integration_config: dict[str, Any], *, port: int = 0) -> None:
    """Run the whole conformance scenario; raises AssertionError naming the first step that failed. `port`: the
    engine's HTTP port, for a platform that must be told a webhook URL before the engine starts (0: any free one)."""
    installed = [i for i in discover() if i.manifest.name not in (integration.manifest.name,)]
    config = kit_config(tmp, driver, integration.manifest.name, integration_config, port=port)
    async with kit_engine(config, [*installed, integration]) as engine:
        await _notification_once_despite_429(engine, driver)
        await _press_acknowledges_and_edits(engine, driver)
        await _backup_with_progress_and_result(driver)
        await _viewer_is_denied(engine, driver)
        await _reconnect_loses_nothing(engine, driver)


async def _notification_once_despite_429(engine: Any, driver: PlatformDriver) -> None:
    driver.rate_limit_next_send(1)
    await post_alert(engine, "KitDiskFull")

    async def delivered() -> list[Shown]:
        return [m for m in await driver.shown(driver.room) if "KitDiskFull" in m.text]

    notes = await eventually(delivered, "the notification in the team's room")
    await asyncio.sleep(1.5)  # a second copy would have arrived by now
    notes = await delivered()
    assert len(notes) == 1, f"1. expected the notification once, got {len(notes)}: {notes}"
    labels = [label for label, _ in notes[0].buttons]
    assert labels == ["Acknowledge", "Mute 1h"], f"1. expected Acknowledge and Mute 1h buttons, got {labels}"
    for _, payload in notes[0].buttons:
        assert len(payload.encode()) <= MAX_BUTTON_BYTES, f"1. a button carries {len(payload)} bytes: {payload!r}"


async def _press_acknowledges_and_edits(engine: Any, driver: PlatformDriver) -> None:
    [note] = [m for m in await driver.shown(driver.room) if "KitDiskFull" in m.text]
    await driver.press(driver.admin, driver.room, note, "Acknowledge")

    async def acknowledged() -> str | None:
        row = await engine.db.call(lambda c: c.execute(
            "SELECT acknowledged_by FROM alert_state WHERE fingerprint = 'fp-KitDiskFull'").fetchone())
        return row["acknowledged_by"] if row else None

    assert await eventually(acknowledged, "the alert to be acknowledged") == "alice", "2. ack not by alice"

    async def edited() -> Shown | None:
        for m in await driver.shown(driver.room):
            if m.id == note.id and "Acknowledged by alice" in m.text:
                return m
        return None

    shown = await eventually(edited, "the notification to be edited to say it was acknowledged")
    assert "Acknowledge" not in [label for label, _ in shown.buttons], "2. the used Acknowledge is still offered"


async def _backup_with_progress_and_result(driver: PlatformDriver) -> None:
    chat = driver.direct_chat(driver.admin)
    before = len(await driver.shown(chat))
    await driver.say(driver.admin, chat, "/backup now")

    async def finished() -> list[Shown]:
        mine = (await driver.shown(chat))[before:]
        return mine if any("backup finished" in m.text for m in mine) else []

    async def texts() -> list[str]:
        return [m.text for m in await driver.shown(chat)]

    mine = await eventually(finished, "the result of /backup now", timeout_s=120, seen=texts)
    progress = [m for m in mine if "REPORT_RESULT" in m.text or "EXECUTE" in m.text]
    assert progress, f"3. no progress message among {[m.text for m in mine]}"
    assert any(m.edits > 0 for m in progress), "3. progress was not shown as edits of one message"
    assert len([m for m in mine if "INIT" in m.text or "EXECUTE" in m.text or "REPORT_RESULT" in m.text]) == 1, \
        f"3. progress took several messages: {[m.text for m in mine]}"


async def _viewer_is_denied(engine: Any, driver: PlatformDriver) -> None:
    chat = driver.direct_chat(driver.viewer)
    tasks_before = len(await engine.tasks.recent(100))
    await driver.say(driver.viewer, chat, "/backup now")

    async def denied() -> list[Shown]:
        return [m for m in await driver.shown(chat) if "Denied" in m.text]

    [answer] = await eventually(denied, "bob's denial")
    assert "requires role admin" in answer.text, f"4. unexpected denial text: {answer.text}"
    assert len(await engine.tasks.recent(100)) == tasks_before, "4. a task was queued for bob"


async def _reconnect_loses_nothing(engine: Any, driver: PlatformDriver) -> None:
    await driver.drop_inbound()
    for n in range(5):
        await post_alert(engine, f"KitAfterDrop{n}")
    chat = driver.direct_chat(driver.admin)
    await driver.say(driver.admin, chat, "/help")

    async def helped() -> list[Shown]:
        return [m for m in await driver.shown(chat) if m.text.startswith("You can run:")]

    await eventually(helped, "an answer to /help after the connection dropped")

    async def all_alerts() -> bool:
        texts = [m.text for m in await driver.shown(driver.room)]
        return all(sum(f"KitAfterDrop{n}" in t for t in texts) == 1 for n in range(5))

    await eventually(all_alerts, "each of the 5 alerts sent around the drop, once")
