"""End to end, sustained: alerts/s from POST to a notification received by a chat client (Herald), against
Alertmanager's POST to webhook delivery in the same run, with the same client.

Herald runs as its own process (`herald run`) with one rule, `on alert notify ops`, and one chat client in team ops;
Alertmanager 0.25 runs with no grouping (`group_by: ['...']`, group_wait 0s) and a local webhook receiver that counts
alerts. Usage: python benchmarks/end_to_end.py [--alerts N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import report  # noqa: E402
from webhook_ingest import am_alert, blast, free_port, herald_payload, wait_ready  # noqa: E402

TOKEN = "benchmark-chat-token-0123456789"
CONFIG = f"""
data_dir = "data"
rules_dir = "rules"
[http]
port = {{port}}
[principals.bench]
roles = ["admin"]
chat_tokens = ["{TOKEN}"]
[teams.ops]
members = ["bench"]
"""
AM_CONFIG = """
route: {{receiver: hook, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: hook
    webhook_configs: [{{url: "http://127.0.0.1:{port}/hook", send_resolved: false, max_alerts: 0}}]
"""


async def herald_run(work: Path, total: int) -> float:
    port = free_port()
    (work / "rules").mkdir()
    (work / "rules" / "all.rules").write_text("on alert notify ops\n")
    (work / "herald.toml").write_text(CONFIG.format(port=port))
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(work / "herald.toml"),
                                "--no-watch"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat", max_size=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
            await ws.recv()
            received = 0
            done = asyncio.Event()

            async def count() -> None:
                nonlocal received
                async for raw in ws:
                    if '"notification"' in raw:
                        received += 1
                        if received == total:
                            done.set()
                            return

            counter = asyncio.ensure_future(count())
            bodies = [herald_payload([am_alert(i, "e2e")], i) for i in range(total)]
            start = time.perf_counter()
            await blast(bodies, f"http://127.0.0.1:{port}/hooks/alertmanager")
            await asyncio.wait_for(done.wait(), 600)
            elapsed = time.perf_counter() - start
            counter.cancel()
            return total / elapsed
    finally:
        process.terminate()
        process.wait(30)


async def alertmanager_run(work: Path, total: int) -> float:
    hook_port, am_port = free_port(), free_port()
    received = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        received += len((await request.json())["alerts"])
        if received >= total:
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    (work / "am").mkdir()
    (work / "am.yml").write_text(AM_CONFIG.format(port=hook_port))
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise SystemExit("prometheus-alertmanager is not installed (bash .ci/setup installs it)")
    process = subprocess.Popen([binary, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
                                f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(f"http://127.0.0.1:{am_port}/-/ready", process)
        bodies = [[am_alert(i, "e2e")] for i in range(total)]
        start = time.perf_counter()
        await blast(bodies, f"http://127.0.0.1:{am_port}/api/v2/alerts")
        await asyncio.wait_for(done.wait(), 600)
        return total / (time.perf_counter() - start)
    finally:
        process.terminate()
        process.wait(30)
        await runner.cleanup()


async def main(total: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="herald-e2e-bench-"))
    try:
        (work / "h").mkdir()
        (work / "a").mkdir()
        herald = await herald_run(work / "h", total)
        am = await alertmanager_run(work / "a", total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report("end to end (alerts/s from POST to delivery, batch 1, 4 connections)",
           ["alerts", "alertmanager_post_to_webhook_per_s", "herald_post_to_chat_per_s", "herald_vs_am"],
           [(total, round(am), round(herald), round(herald / am, 2))], target=2.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    asyncio.run(main(parser.parse_args().alerts))
