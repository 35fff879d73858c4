"""A full data disk against a real engine process: the data folder lives on a small tmpfs that the test fills.

Herald must refuse honestly (503 with a reason and Retry-After, /healthz not ready, the refusal counted), never answer
2xx for an event it then loses, start on a full disk and refuse work rather than exit, and once space is back,
recover by itself and handle (and notify) every event it accepted.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets

from engine.cli.client import alert_payload
from engine.core.config import load_config
from engine.core.store import DB_NAME
from engine.testing import ChatClient
from engine.testing.conformance import eventually
from tests.support import (
    ALICE_TOKEN,
    ONE_BY_ONE_TOML,
    REPO,
    chat_url,
    free_port,
    http_url,
    stalled_engine,
    wait_until_ok,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the data disk needs root "
                                                          "(CI runs as root)")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses even one more byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


class Herald:
    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port, self.url = config, port, f"http://127.0.0.1:{port}"
        self.log = config.parent / "herald.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(self.config), "--port", str(self.port)],
            cwd=self.config.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))  # noqa: SIM115

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError(f"Herald did not stop within 30 s\n{self.log.read_text()[-3000:]}") from None

    async def health(self) -> tuple[int, dict[str, object]]:
        """/healthz once it answers at all (failing if the process exits first)."""
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        return response.status, await response.json()
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        raise AssertionError(f"/healthz never answered\n{self.log.read_text()[-3000:]}")

    async def post_alert(self, n: int) -> aiohttp.ClientResponse:
        payload = alert_payload({"severity": "critical", "service": "database"}, summary=f"alert-{n:04d}",
                                resolved=False)
        payload["alerts"][0]["fingerprint"] = f"fp{n:04d}"  # type: ignore[index]
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/hooks/alertmanager", json=payload) as response:
                await response.read()
                return response

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}/metrics") as response:
                text = await response.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def notified_summaries(port: int) -> set[str]:
    """What alice's chat client is shown when it connects now: everything addressed to her, replayed."""
    seen: set[str] = set()
    async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as ws:
        await ws.send(json.dumps({"type": "auth", "token": ALICE_TOKEN, "since": 0}))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "notification":
                seen.update(word for word in frame["text"].replace("—", " ").split() if word.startswith("alert-"))
            elif frame["type"] == "caught_up":
                return seen
    return seen


def disk_config(config_file: Path, disk: Path, min_free_mb: int) -> Path:
    text = config_file.read_text().replace('data_dir = "data"', f'data_dir = "{disk / "data"}"')
    text = text if ONE_BY_ONE_TOML in text else text + ONE_BY_ONE_TOML
    config_file.write_text(text.replace("[http]", f"min_free_disk_mb = {min_free_mb}\n\n[http]"))
    return config_file


async def eventually_notified(herald: Herald, accepted: set[str]) -> None:
    missing = accepted
    for _ in range(100):
        missing = accepted - await notified_summaries(herald.port)
        if not missing:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"accepted but never notified: {sorted(missing)[:10]}")


def unhandled_events(disk: Path) -> int:
    with sqlite3.connect(disk / "data" / DB_NAME) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE status != 'handled'").fetchone()[0])


async def test_alerts_accepted_on_a_filling_disk_are_all_handled_once_it_has_room(
        disk: Path, config_file: Path) -> None:
    """With no free-space margin (min_free_disk_mb = 0), alerts posted with a few pages of room each are either
    refused with 503 or journaled; whichever were journaled (some of them may find no room for their rule runs and
    wait for the disk) are all handled and notified once it has room. The waiting itself is shown deterministically
    by the next test."""
    herald = Herald(disk_config(config_file, disk, 0), free_port())
    accepted: set[str] = set()
    try:
        herald.start()
        await wait_until_ok(f"{herald.url}/healthz", process=herald.process, log=herald.log)
        for n in range(10):
            assert (await herald.post_alert(n)).status == 200
            accepted.add(f"alert-{n:04d}")

        filler = fill(disk)
        refusals = []
        for n in range(10, 80):  # a little room each time, so some alerts are journaled but their rules cannot run
            os.truncate(filler, filler.stat().st_size - (n % 12) * 4096)
            response = await herald.post_alert(n)
            if response.status == 200:
                accepted.add(f"alert-{n:04d}")  # it found room: it must then be handled and notified
            else:
                refusals.append(response)
            fill(disk)
        assert refusals, "a full disk never refused an alert"
        assert {r.status for r in refusals} == {503}, "a refusal for a full disk is a 503, never a bare 500"
        assert all(r.headers.get("Retry-After") for r in refusals)
        status, health = await herald.health()
        assert status == 503 and "disk" in json.dumps(health), health
        assert await herald.metric("herald_events_refused_total") >= 1
        assert await herald.metric("herald_storage_up") == 0

        filler.unlink()  # space is back: Herald notices by itself
        await wait_until_ok(f"{herald.url}/healthz", process=herald.process, log=herald.log, timeout_s=30)
        await eventually_notified(herald, accepted)
    finally:
        herald.stop()
    assert unhandled_events(disk) == 0


async def test_a_start_on_a_full_disk_refuses_work_until_there_is_room(disk: Path, config_file: Path) -> None:
    """Below min_free_disk_mb Herald refuses before writes fail; started on a full disk it runs, says why it
    refuses, and takes work once there is room, all without a restart."""
    herald = Herald(disk_config(config_file, disk, 1), free_port())
    accepted: set[str] = set()
    try:
        herald.start()
        await wait_until_ok(f"{herald.url}/healthz", process=herald.process, log=herald.log)
        assert (await herald.post_alert(0)).status == 200
        accepted.add("alert-0000")
        herald.stop()

        filler = fill(disk)
        herald.start()
        status, health = await herald.health()
        assert status == 503 and "disk" in json.dumps(health), health
        response = await herald.post_alert(1)
        assert response.status == 503 and response.headers.get("Retry-After")
        assert "disk" in (await response.json())["error"]

        filler.unlink()
        await wait_until_ok(f"{herald.url}/healthz", process=herald.process, log=herald.log, timeout_s=30)
        for n in range(2, 6):
            assert (await herald.post_alert(n)).status == 200
            accepted.add(f"alert-{n:04d}")
        await eventually_notified(herald, accepted)
    finally:
        herald.stop()
    assert unhandled_events(disk) == 0


async def test_an_accepted_alert_whose_rules_hit_the_full_disk_waits_and_runs_once_there_is_room(
        disk: Path, config_file: Path) -> None:
    """The dispatcher holds the alert (tests.support.stalled_engine) until the disk is full: it is journaled, its
    rule run fails to write, so it is not marked handled but waits; once the filler goes it runs and notifies."""
    config = load_config(disk_config(config_file, disk, 0))
    async with stalled_engine(config, max_queued_events=100) as (engine, gate), \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        payload = alert_payload({"severity": "critical", "service": "database"}, summary="alert-held",
                                resolved=False)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
                assert response.status == 200
                [event_id] = (await response.json())["events"]
        # Its rules will need new disk space: SQLite writes into the room its WAL file already has, so empty the WAL
        # first (a TRUNCATE checkpoint), then take the rest of the disk.
        await engine.db.call(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        filler = fill(disk)
        gate.set()  # its rules now run against the full disk
        await eventually(lambda: asyncio.sleep(0, engine.metrics.stalled >= 1), "the alert waiting for the disk")
        status = await engine.db.call(lambda conn: conn.execute(
            "SELECT status FROM events WHERE id = ?", (event_id,)).fetchone()[0])
        assert status == "accepted", "an event whose rules could not run was marked handled"

        filler.unlink()
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=30)
        assert "alert-held" in note["text"]
        await engine.db.flush()
        await eventually(lambda: engine.db.call(lambda conn: conn.execute(
            "SELECT status FROM events WHERE id = ?", (event_id,)).fetchone()[0] == "handled"), "handled")
