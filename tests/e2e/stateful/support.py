"""Helpers for the stateful-clause tests: an engine with an injected clock, posting alerts, waiting, reading runs
and audit entries, talking over chat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dsl import EventGraph
from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.core.timers import Clock, ManualClock
from engine.reload.rules import compile_paths
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.support import http_url

DAVE_TOKEN = "dave-chat-token-0123456789ab"
ERIN_TOKEN = "erin-chat-token-0123456789ab"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

def compile_rules(config: Config, rules: str) -> tuple[EventGraph, Any]:
    (config.rules_dir / "stateful.rules").write_text(rules)
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    return result.graph, result.teams


@asynccontextmanager
async def engine_for(config: Config, rules: str, clock: Clock | None = None) -> AsyncIterator[Engine]:
    graph, teams = compile_rules(config, rules)
    engine = Engine(config, graph, teams=teams, clock=clock, watch=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def post_alert(engine: Engine, name: str, *, service: str = "db", resolved: bool = False,
                     summary: str | None = None) -> str:
    payload = alert_payload({"alertname": name, "service": service}, summary=summary or name, resolved=resolved)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()
    return str(payload["alerts"][0]["fingerprint"])  # type: ignore[index]


async def settle(engine: Engine) -> None:
    """Wait until every accepted event has been handled."""
    for _ in range(400):
        left = await engine.db.call(
            lambda c: c.execute("SELECT count(*) FROM events WHERE status = 'accepted'").fetchone()[0])
        if left == 0:
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(0.025)
    raise AssertionError("events were not handled in time")


async def runs(engine: Engine, rule: str) -> list[tuple[str, str]]:
    """Each run of `rule`: (last state, its detail), in order."""
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT run_id, state, detail FROM run_trace WHERE rule = ? ORDER BY rowid", (rule,)).fetchall())
    last: dict[str, tuple[str, str]] = {}
    for row in rows:
        last[row["run_id"]] = (row["state"], row["detail"])
    return list(last.values())


async def audit(engine: Engine, action: str) -> list[dict[str, Any]]:
    rows = await engine.db.call(lambda c: c.execute(
        "SELECT * FROM audit_log WHERE action = ? ORDER BY seq", (action,)).fetchall())
    out = []
    for row in rows:
        entry = dict(row)
        entry.update(json.loads(entry.get("data") or "{}"))
        out.append(entry)
    return out


async def tick(engine: Engine, clock: ManualClock, seconds: float) -> None:
    """Move the engine's clock and give its timer loop a moment to fire what came due."""
    clock.advance(seconds)
    engine.timers.poke()
    await asyncio.sleep(0.3)
    await settle(engine)


def notes(client: ChatClient, rule: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["type"] == "notification" and f["rule"] == rule]


async def drain(client: ChatClient, seconds: float = 0.3) -> None:
    """Read whatever frames arrive for a moment."""
    try:
        await client.wait_for(lambda f: False, timeout=seconds)
    except TimeoutError:
        pass


async def answer(client: ChatClient, text: str, kind: str = "reply") -> dict[str, Any]:
    msg = await client.say(text)
    return await client.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == kind, timeout=20)


async def press(client: ChatClient, button: str, kind: str = "reply") -> dict[str, Any]:
    pid = await client.press(button)
    return await client.wait_for(lambda f: f.get("in_reply_to") == pid and f["type"] in (kind, "error"), timeout=20)
