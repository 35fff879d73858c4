"""A broken rule file plus a restart must not mean no paging at all (issue 20 item 10): `herald run` starts with the
last rules that compiled, says so loudly (stderr, audit, /metrics, a notice to admins), keeps watching, and loads the
files once they are fixed; `--strict` keeps refusing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from engine.testing import ChatClient
from engine.testing.conformance import eventually
from tests.support import ALICE_TOKEN, free_port, wait_until_ok

REPO = Path(__file__).resolve().parents[2]
GOOD = 'on alert notify ops saying "page: {alert.name}"\n'
BROKEN = 'on alert notify ops sayin "page: {alert.name}"\n'


def _install(tmp: Path) -> Path:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "ops.rules").write_text(GOOD)
    config = tmp / "herald.toml"
    config.write_text(f'data_dir = "data"\nrules_dir = "rules"\n[principals.alice]\nroles = ["admin"]\n'
                      f'chat_tokens = ["{ALICE_TOKEN}"]\n[teams.ops]\nmembers = ["alice"]\n')
    return config


def _herald(config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--port", str(port),
                             *extra], cwd=config.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=open(config.parent / "herald.log", "ab"))  # noqa: SIM115


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(15)


async def _metric(port: int, name: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


async def _alert(port: int, name: str) -> None:
    body = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name, "severity": "critical"}, "fingerprint": f"fp-{name}",
         "startsAt": "2026-01-01T00:00:00Z"}]}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{port}/hooks/alertmanager", json=body) as response:
        assert response.status == 200


async def test_a_restart_with_a_broken_rule_file_runs_the_last_good_rules_loudly(tmp_path: Path) -> None:
    config, port, log = _install(tmp_path), free_port(), tmp_path / "herald.log"
    first = _herald(config, port)
    try:
        await wait_until_ok(f"http://127.0.0.1:{port}/healthz", process=first, log=log)
    finally:
        _stop(first)

    (tmp_path / "rules" / "ops.rules").write_text(BROKEN)
    command = [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--port", str(port), "--strict"]
    strict = await asyncio.to_thread(subprocess.run, command, cwd=tmp_path, capture_output=True, text=True,
                                     timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert strict.returncode == 1 and "ops.rules:1:" in strict.stderr and "(--strict)" in strict.stderr

    second = _herald(config, port)
    try:
        await wait_until_ok(f"http://127.0.0.1:{port}/healthz", process=second, log=log)
        assert "starting with the last rules that compiled" in log.read_text()
        assert await _metric(port, "herald_rules_stale") == "1"
        # since=0: what was sent before she connected (the notice at start) is caught up
        async with ChatClient.connect(f"ws://127.0.0.1:{port}/chat", ALICE_TOKEN, since=0) as alice:
            notice = await alice.wait_for(lambda f: f["type"] == "notification" and "⚠" in f["text"])
            assert "rules/ops.rules do not compile" in notice["text"]
            await _alert(port, "DiskFull")  # still paged, by the last good rules
            page = await alice.wait_for(lambda f: f["type"] == "notification" and "page:" in f["text"])
            assert page["text"] == "page: DiskFull"

            (tmp_path / "rules" / "ops.rules").write_text(GOOD.replace("page:", "fixed:"))

            async def loaded() -> bool:
                return await _metric(port, "herald_rules_stale") == "0"

            await eventually(loaded, "the fixed file to load", timeout_s=30)
            await _alert(port, "CpuHigh")
            fixed = await alice.wait_for(lambda f: f["type"] == "notification" and "fixed:" in f["text"])
            assert fixed["text"] == "fixed: CpuHigh"
    finally:
        _stop(second)
