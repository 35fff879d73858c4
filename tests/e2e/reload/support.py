"""Helpers for the hot-reload tests: file writes the way editors and tools make them, waiting, posting alerts,
an engine that reloads its config file too."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from engine.cli.client import alert_payload
from engine.core.config import load_config
from engine.reload.reloader import ConfigSource
from engine.reload.rules import compile_paths
from engine.server.app import Engine
from tests.support import http_url

RULE_A = "rule page-db:\n  on alert severity critical from database\n  notify ops saying \"A {alert.name}\"\n"


async def audit_rows(engine: Engine, action: str) -> list[dict[str, Any]]:
    rows = await engine.db.call(
        lambda conn: conn.execute("SELECT actor, data FROM audit_log WHERE action = ? ORDER BY seq",
                                  (action,)).fetchall())
    return [{"actor": row["actor"], **json.loads(row["data"])} for row in rows]


async def until(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def read(path: Path) -> str:
    return path.read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def write_atomically(path: Path, text: str) -> None:
    """Write a temp file next to `path` (a name the watcher ignores) and rename it over `path`."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


async def post_alerts(session: aiohttp.ClientSession, engine: Engine, alerts: list[dict[str, str]]) -> list[str]:
    """POST one Alertmanager payload with these (name, service, severity) alerts; return the accepted event ids.
    A 503 (the engine's queue is full: nothing was accepted) is retried, as Alertmanager does."""
    payload = alert_payload({"alertname": "x"}, summary="reload test", resolved=False)
    template = payload["alerts"][0]  # type: ignore[index]
    payload["alerts"] = [
        {**template, "labels": {"alertname": a["name"], "service": a["service"], "severity": a.get("severity", "")},
         "fingerprint": a.get("fingerprint", a["name"])} for a in alerts]
    while True:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            body = await response.json()
            if response.status != 503:
                assert response.status == 200, body
                return list(body["events"])
        await asyncio.sleep(0.1)


@asynccontextmanager
async def engine_with_config_source(config_file: Path, **kwargs: Any) -> AsyncIterator[Engine]:
    config = load_config(config_file)
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    engine = Engine(config, result.graph, teams=result.teams,
                    config_source=ConfigSource(config_file, lambda: load_config(config_file)), **kwargs)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
