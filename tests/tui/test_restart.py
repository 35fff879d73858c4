"""The TUI against a real `herald run` process that stops answering, stops and starts again (issue 20 item 5): the
header says so within a few pings, a command typed meanwhile is answered by the TUI itself ("not sent" or "no
answer"), and after the restart the Runs tab shows the runs of before with their final states."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from engine.cli.client import alert_payload
from engine.client.remote import RemoteEngineClient, read_api_token
from tests.support import REPO, free_port, wait_until_ok
from tui import make_app
from tui.app import HeraldApp

GUARD_S = 15  # a guard, not a measure: with the old 20 s heartbeat a silent engine was trusted for ~30 s


class HeraldProcess:
    """`herald run` on a config file and a fixed port, started and stopped like an operator would."""

    def __init__(self, config: Path) -> None:
        self.config, self.port = config, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = config.parent / "data"

    async def start(self) -> None:
        log = self.config.parent / "herald.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(self.config), "--port", str(self.port)],
            cwd=self.config.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
        await wait_until_ok(f"{self.url}/healthz", process=self.process, log=log)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError("herald run did not stop:\n" +
                                     (self.config.parent / "herald.log").read_text()[-3000:]) from None

    def token(self) -> str:
        return read_api_token(self.data)


@pytest.fixture
def herald(config_file: Path) -> Iterator[HeraldProcess]:
    process = HeraldProcess(config_file)
    try:
        yield process
    finally:
        process.stop()


def rows(app: HeraldApp, view: str) -> list[str]:
    table = app.query_one(f"#{view}-table", DataTable)
    return [" | ".join(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


def text_of(app: HeraldApp, widget: str) -> str:
    return str(app.query_one(widget, Static).render())


async def until(pilot: Pilot, predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"the TUI did not show {what} in time"
        await pilot.pause(0.05)


async def post_alert(url: str) -> None:
    payload = alert_payload({"alertname": "DiskFull", "severity": "critical", "service": "database"},
                            summary="/var is 97% full", resolved=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/hooks/alertmanager", json=payload) as response:
            assert response.status == 200, await response.text()


def finished_run(app: HeraldApp) -> bool:
    return any("ops.rules:5" in row and "REPORT_RESULT" in row for row in rows(app, "runs"))


async def test_a_silent_engine_is_seen_a_typed_command_is_not_lost_and_runs_survive_a_restart(
    herald: HeraldProcess,
) -> None:
    await herald.start()
    app = make_app(RemoteEngineClient(herald.url, herald.token, delays=lambda: iter(lambda: 0.2, None)))
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "engine: connected" in text_of(app, "#header"), "the connection")
        await post_alert(herald.url)
        await until(pilot, lambda: finished_run(app), "the alert's finished run")

        herald.signal(signal.SIGSTOP)  # the engine stops answering; its socket stays open
        await pilot.press("slash", *"whoami", "enter")
        # typed while the TUI still believed in the connection: the TUI says it got no answer
        await until(pilot, lambda: "no answer to /whoami" in text_of(app, "#reply"), "the lost command",
                    timeout=GUARD_S)
        await until(pilot, lambda: "engine: disconnected, retrying" in text_of(app, "#header"),
                    "the dead connection", timeout=GUARD_S)
        await pilot.press("slash", *"whoami", "enter")
        await until(pilot, lambda: "not sent: engine unreachable" in text_of(app, "#reply"), "the refusal")

        herald.stop()
        await herald.start()  # a new process on the same data folder and port, with a new local token
        await until(pilot, lambda: "engine: connected" in text_of(app, "#header"), "the reconnection")
        await until(pilot, lambda: sum("engine.started" in row for row in rows(app, "audit")) == 2,
                    "the new engine's snapshot")
        assert finished_run(app), rows(app, "runs")

    fresh = make_app(RemoteEngineClient(herald.url, herald.token))
    async with fresh.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "engine: connected" in text_of(fresh, "#header"), "the connection")
        await until(pilot, lambda: finished_run(fresh), "the runs of before the restart")
