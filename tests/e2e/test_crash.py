"""Crash safety against a real process: `kill -9` the engine at random moments while alerts (HTTP) and commands
(WebSocket) are in flight. After a restart every accepted event is handled, no notification arrives twice and no
task runs twice."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import websockets

from engine.cli.client import alert_payload
from engine.core.store import DB_NAME
from tests.support import ALICE_TOKEN, ONE_BY_ONE_TOML, REPO, free_port, wait_until_ok

ALERTS = int(os.environ.get("HERALD_CRASH_ALERTS", "5000"))
COMMANDS = int(os.environ.get("HERALD_CRASH_COMMANDS", "500"))
KILLS = 3
RULES = "on command work require role admin run work.sh\n"


class Herald:
    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(self.config), "--port", str(self.port)],
            cwd=self.config.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=open(self.config.parent / "herald.log", "ab"))  # noqa: SIM115
        await wait_until_ok(f"http://127.0.0.1:{self.port}/healthz", process=self.process,
                            log=self.config.parent / "herald.log")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


class Load:
    """Senders that keep going across crashes and remember what Herald accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted_alerts: set[str] = set()
        self.accepted_commands: set[str] = set()  # event ids from acks
        self.notifications: collections.Counter[str] = collections.Counter()
        self.seqs: set[int] = set()  # outbox numbers of the frames received
        self.notified: set[str] = set()  # the alerts' summaries, as the person saw them
        self.acked_ids: set[str] = set()  # client ids of commands Herald acknowledged
        self.results: set[str] = set()  # client ids of commands whose result reached the person
        self.next_alert = 0
        self.next_command = 0

    async def alerts(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while self.next_alert < ALERTS and not stop.is_set():
                batch = list(range(self.next_alert, min(self.next_alert + 10, ALERTS)))
                payload = alert_payload({"severity": "critical", "service": "database"}, summary="x", resolved=False)
                template = payload["alerts"][0]  # type: ignore[index]
                payload["alerts"] = [dict(template, fingerprint=f"fp{i:06d}",  # type: ignore[index]
                                          annotations={"summary": f"alert-{i:06d}"}) for i in batch]
                try:
                    async with session.post(f"http://127.0.0.1:{self.port}/hooks/alertmanager", json=payload) as r:
                        if r.status == 200:
                            self.accepted_alerts.update(f"alert-{i:06d}" for i in batch)
                            self.next_alert = batch[-1] + 1
                            continue
                except aiohttp.ClientError:
                    pass
                return  # the engine is down: this phase is over

    async def chat(self, stop: asyncio.Event) -> None:
        try:
            async with websockets.connect(f"ws://127.0.0.1:{self.port}/chat") as ws:
                # As docs/chat-protocol.md asks of a client: send the largest seq seen, ignore frames already had.
                await ws.send(json.dumps({"type": "auth", "token": ALICE_TOKEN, "since": max(self.seqs, default=0)}))
                json.loads(await ws.recv())
                sender = asyncio.ensure_future(self._commands(ws, stop))
                try:
                    async for raw in ws:
                        frame = json.loads(raw)
                        if "seq" in frame:
                            if frame["seq"] in self.seqs:
                                continue
                            self.seqs.add(frame["seq"])
                        if frame["type"] == "notification":
                            # By event: a sender that lost its 200 to a crash posts the same alert again, which is
                            # a new event (Alertmanager does the same); one event must never notify twice.
                            self.notifications[frame["event"]] += 1
                            self.notified.add(frame["text"].split("alert-", 1)[1][:6])
                        elif frame["type"] == "ack":
                            self.accepted_commands.add(frame["event"])
                            self.acked_ids.add(frame["id"])
                        elif frame["type"] == "result":
                            self.results.add(frame["in_reply_to"])
                finally:
                    sender.cancel()
        except (OSError, websockets.ConnectionClosed):
            return

    async def _commands(self, ws: websockets.ClientConnection, stop: asyncio.Event) -> None:
        while self.next_command < COMMANDS and not stop.is_set():
            await ws.send(json.dumps({"type": "message", "id": f"c{self.next_command}", "text": "/work"}))
            self.next_command += 1
            await asyncio.sleep(0.01)


@pytest.fixture
def crash_config(tmp_path: Path, config_file: Path, rules_dir: Path) -> Path:
    (rules_dir / "work.rules").write_text(RULES)
    script = rules_dir / "scripts" / "work.sh"
    script.write_text("#!/bin/sh\necho \"worked $HERALD_TASK_ID\"\n")
    os.chmod(script, 0o755)
    config_file.write_text(config_file.read_text() + ONE_BY_ONE_TOML)
    return config_file


async def test_kill_9_loses_nothing_and_repeats_nothing(crash_config: Path) -> None:
    herald = Herald(crash_config, free_port())
    load = Load(herald.port)
    rng = random.Random(1)
    try:
        for phase in range(KILLS + 1):
            await herald.start()
            stop = asyncio.Event()
            senders = [asyncio.ensure_future(load.chat(stop)), asyncio.ensure_future(load.alerts(stop))]
            if phase < KILLS:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                herald.kill()  # mid-flight, no warning
            else:
                await asyncio.wait_for(senders[1], 300)  # the last phase sends everything that is left
                while load.next_command < COMMANDS:
                    await asyncio.sleep(0.1)
                await _settle(crash_config.parent / "data" / DB_NAME)
                await asyncio.sleep(1)  # let the last notifications reach the client
            stop.set()
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
    finally:
        herald.stop()

    with sqlite3.connect(crash_config.parent / "data" / DB_NAME) as db:
        unhandled = db.execute("SELECT count(*) FROM events WHERE status != 'handled'").fetchone()[0]
        summaries = {json.loads(body)["data"].get("summary") for (body,) in
                     db.execute("SELECT body FROM events WHERE kind = 'alert'")}
        command_events = {row[0] for row in db.execute("SELECT id FROM events WHERE kind = 'command'")}
        tasks_per_event = collections.Counter(json.loads(body)["event_id"] for (body,) in
                                              db.execute("SELECT body FROM tasks"))
        statuses = collections.Counter(row[0] for row in db.execute("SELECT status FROM tasks"))
    assert len(load.accepted_alerts) > ALERTS // 2 and len(load.accepted_commands) > COMMANDS // 4
    assert unhandled == 0
    assert load.accepted_alerts <= summaries, "an accepted alert is missing from the journal"
    assert load.accepted_commands <= command_events, "an acknowledged command is missing from the journal"
    unheard = load.accepted_alerts - {f"alert-{n}" for n in load.notified}
    assert not unheard, f"accepted but never shown to the person: {sorted(unheard)[:5]}"
    unanswered = load.acked_ids - load.results
    assert not unanswered, f"commands acknowledged whose result never reached the person: {sorted(unanswered)[:5]}"
    twice = [text for text, n in load.notifications.items() if n > 1]
    assert not twice, f"notified more than once: {twice[:5]}"
    assert max(tasks_per_event.values()) == 1, "a command started more than one task"
    assert set(tasks_per_event) == command_events, "an accepted command never got its task"
    assert statuses["pending"] == statuses["running"] == 0
    print(f"\ncrash test: {len(load.accepted_alerts)} alerts and {len(load.accepted_commands)} commands accepted "
          f"across {KILLS} kill -9s; {sum(load.notifications.values())} notifications, none twice; "
          f"tasks {dict(statuses)}")


async def _settle(db_path: Path, timeout: float = 240) -> None:
    """Wait until the journal has nothing unhandled and no task is pending or running."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        with sqlite3.connect(db_path) as db:
            open_events = db.execute("SELECT count(*) FROM events WHERE status != 'handled'").fetchone()[0]
            open_tasks = db.execute("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')").fetchone()[0]
        if open_events == 0 and open_tasks == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not settled: {open_events} events unhandled, {open_tasks} tasks open")
