"""Helpers shared by the tests: well-known tokens, URLs of a running engine, a real Alertmanager handle."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from engine.core.config import Config
from engine.core.events import Event
from engine.server.app import Engine
from engine.testing import running_engine

REPO = Path(__file__).resolve().parents[1]
ALICE_TOKEN = "alice-chat-token-0123456789"
BOB_TOKEN = "bob-chat-token-0123456789ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_url(engine: Engine) -> str:
    return f"ws://127.0.0.1:{engine.port}/chat"


def http_url(engine: Engine) -> str:
    return f"http://127.0.0.1:{engine.port}"


class Alertmanager:
    """A running Prometheus Alertmanager process and its v2 API."""

    def __init__(self, url: str, process) -> None:  # type: ignore[no-untyped-def]
        self.url = url
        self.process = process

    async def post_alerts(self, alerts: list[dict[str, object]]) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/api/v2/alerts", json=alerts) as response:
                assert response.status == 200, await response.text()


async def wait_until_ok(url: str, *, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 20,
                        log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if `process` exits first."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if process is not None and process.poll() is not None:
                break
            await asyncio.sleep(0.05)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{url} did not answer 200 in time\n{tail}")


@asynccontextmanager
async def start_alertmanager(folder: Path, config_yaml: str, port: int | None = None) -> AsyncIterator[Alertmanager]:
    """Run a real Prometheus Alertmanager (clustering off, on `port` or a free one) with this config until the block
    ends."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager is not installed (bash .ci/setup installs it)"
    folder = folder / "alertmanager"
    (folder / "data").mkdir(parents=True)
    (folder / "am.yml").write_text(config_yaml)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "am.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={folder / 'am.yml'}", f"--storage.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", f"--web.external-url={url}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            await wait_until_ok(f"{url}/-/ready", process=process, log=folder / "am.log")
            yield Alertmanager(url, process)
        finally:
            process.terminate()
            process.wait(10)


@asynccontextmanager
async def stalled_engine(config: Config, *, max_queued_events: int) -> AsyncIterator[tuple[Engine, asyncio.Event]]:
    """A running engine that admits at most `max_queued_events` waiting events and whose dispatchers hold every
    event until the returned gate is set: a full queue on demand."""
    async with running_engine(config.model_copy(update={"max_queued_events": max_queued_events})) as engine:
        gate = asyncio.Event()
        handle = engine.runtime.handle

        async def slow_handle(event: Event) -> None:
            await gate.wait()
            await handle(event)

        engine.runtime.handle = slow_handle  # type: ignore[method-assign]
        yield engine, gate


# For tests that count one notification per alert (hundreds of them): no alert storm digest. Storms have their own
# tests (tests/e2e/test_alert_storm.py).
ONE_BY_ONE_TOML = "\n[alerts]\nstorm_threshold = 0\n"


def one_by_one(config: Config) -> Config:
    """`config` with alert storm digests off."""
    return config.model_copy(update={"alerts": config.alerts.model_copy(update={"storm_threshold": 0})})
