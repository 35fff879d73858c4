"""`GET /metrics` on a running engine: the Prometheus text format, and numbers that follow what happened."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config
from engine.core.events import AlertData, Event
from engine.core.ids import derived_id
from engine.core.journal import Journal
from engine.core.store import Database
from engine.server.app import SCHEMAS, Engine
from engine.testing import running_engine
from tests.support import http_url, stalled_engine

# One sample line of the text format: a name, at most one label here, and a number.
SAMPLE = re.compile(r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<label>[a-z_]+)="(?P<value>[^"\\]*)"\})? '
                    r"(?P<number>-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)")


async def scrape(engine: Engine) -> dict[str, float]:
    """Every sample as `name` or `name{label="value"}` -> number; fails on any line that is not the format."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http_url(engine)}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await response.text()
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge") and name not in typed
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.fullmatch(line)
        assert match is not None, f"not a sample line: {line!r}"
        assert match["name"] in typed, f"{match['name']} has no TYPE line before it"
        key = match["name"] + (f'{{{match["label"]}="{match["value"]}"}}' if match["label"] else "")
        samples[key] = float(match["number"])
    return samples


async def post(engine: Engine, service: str) -> int:
    payload = alert_payload({"severity": "info", "service": service}, summary="x", resolved=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            return response.status


@pytest.fixture
async def stalled(config: Config) -> AsyncIterator[tuple[Engine, asyncio.Event]]:
    """An engine whose dispatchers wait for `gate`, admitting at most 2 waiting events."""
    async with stalled_engine(config, max_queued_events=2) as stalled:
        yield stalled


async def test_metrics_count_accepted_waiting_and_refused_events(stalled: tuple[Engine, asyncio.Event]) -> None:
    engine, gate = stalled
    before = await scrape(engine)
    assert before["herald_up"] == 1
    assert before["herald_rules"] == len(engine.graph.rules) > 0
    assert before["herald_events_waiting_limit"] == 2
    assert before['herald_tasks{status="pending"}'] == 0 and before["herald_events_refused_total"] == 0
    assert before['herald_events_accepted_total{kind="alert"}'] == 0
    assert before['herald_events_accepted_total{kind="command"}'] == 0

    assert [await post(engine, f"s{n}") for n in range(3)] == [200, 200, 503]
    during = await scrape(engine)
    assert during['herald_events_accepted_total{kind="alert"}'] == 2
    assert during["herald_events_waiting"] == 2
    assert during["herald_events_refused_total"] == 1
    assert during["herald_store_commits_total"] > before["herald_store_commits_total"]

    gate.set()
    for _ in range(100):
        if (await scrape(engine))["herald_events_waiting"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await scrape(engine))["herald_events_waiting"] == 0


async def test_history_past_its_keep_is_forgotten_at_start_and_counted(config: Config) -> None:
    """A data folder holding handled alerts from 40 days ago: the engine's housekeeping forgets them once it runs,
    and `/metrics` says how many rows of each table went."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(config.data_dir)
    await db.open(SCHEMAS)
    old = datetime.now(UTC) - timedelta(days=40)
    events = [Event(id=derived_id(old, "old", str(n)), source="alertmanager", time=old + timedelta(seconds=n),
                    data=AlertData(fingerprint=f"fp-{n}", status="firing", name="DiskFull", severity="warning"))
              for n in range(3)]
    await Journal(db).accept(events)
    await db.write(lambda conn: conn.execute("UPDATE events SET status = 'handled'"))
    await db.close()

    async with running_engine(config) as engine:
        for _ in range(100):
            samples = await scrape(engine)
            if samples['herald_history_forgotten_total{table="events"}']:
                break
            await asyncio.sleep(0.05)
        assert samples['herald_history_forgotten_total{table="events"}'] == 3
        assert samples['herald_history_forgotten_total{table="outbox"}'] == 0
        assert await engine.journal.recent(10) == []
