"""End to end, sustained: alerts/s from POST to a notification received by a chat client (Herald), against
Alertmanager's POST to webhook delivery in the same run, with the same client.

Herald runs as its own process (`herald run`) with one rule, `on alert notify ops`, and one chat client in team ops;
Alertmanager 0.25 runs with no grouping (`group_by: ['...']`, group_wait 0s) and a local webhook receiver that counts
alerts (a no-op asyncio HTTP server in this process). The load client (benchmarks/_load.py) pre-encodes every request
and runs in its own process(es), so it never shares an interpreter with the chat client or the webhook receiver; its
ceiling with the same bodies against a no-op server is reported next to the result, with the CPU each server used.
Each batch size gets a row: one alert per POST, and 100 per POST (how Alertmanager and Prometheus send: in groups).
Usage: python benchmarks/end_to_end.py [--alerts N] [--batch 1,100] [--connections 4] [--client-procs 1] [--client raw]
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
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import CLIENTS, Load, client_ceiling, free_port, post_all, proc_cpu_s, serve_null  # noqa: E402
from _machine import report  # noqa: E402
from webhook_ingest import CLIENT_PROCS, CONNECTIONS, am_alert, herald_payload, start_alertmanager, wait_ready  # noqa: E402

TOKEN = "benchmark-chat-token-0123456789"
CONFIG = f"""
data_dir = "data"
rules_dir = "rules"
[http]
port = {{port}}
[alerts]
storm_threshold = 0  # one notification per alert (what Alertmanager's webhook gets too), not one storm digest
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


class Run:
    """One system's run: alerts/s from the first POST to the last delivery, the CPU cores the server kept busy
    over that time, and the load client's own numbers."""

    def __init__(self, rate: float, server_cores: float, load: Load, receiver_cores: float) -> None:
        self.rate, self.server_cores, self.load = rate, server_cores, load
        self.receiver_cores = receiver_cores  # this process: the chat client or the webhook receiver


def _batches(items: list[Any], batch: int) -> list[list[Any]]:
    return [items[i:i + batch] for i in range(0, len(items), batch)]


async def herald_run(work: Path, total: int, batch: int, options: dict[str, Any]) -> Run:
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
            last = 0.0

            async def count() -> None:
                nonlocal received, last
                async for raw in ws:
                    if '"notification"' in raw:
                        received += 1
                        if received == total:
                            last = time.monotonic()
                            done.set()
                            return

            counter = asyncio.ensure_future(count())
            bodies = [herald_payload(chunk, n * batch)
                      for n, chunk in enumerate(_batches([am_alert(i, "e2e") for i in range(total)], batch))]
            cpu0, own0 = proc_cpu_s(process.pid), time.process_time()
            load = await post_all(f"http://127.0.0.1:{port}/hooks/alertmanager", bodies, **options)
            await asyncio.wait_for(done.wait(), 600)
            elapsed = last - load.started  # from the first POST (not the client processes' start-up)
            cores = (proc_cpu_s(process.pid) - cpu0) / elapsed
            counter.cancel()
            return Run(total / elapsed, cores, load, (time.process_time() - own0) / elapsed)
    finally:
        process.terminate()
        process.wait(30)


async def alertmanager_run(work: Path, total: int, batch: int, options: dict[str, Any]) -> Run:
    hook_port = free_port()
    received = [0]  # alerts delivered to the webhook, counted by their "fingerprint" keys
    server = await serve_null(hook_port, received, b'"fingerprint":')
    process, url = start_alertmanager(work, AM_CONFIG.format(port=hook_port))
    try:
        await wait_ready(f"{url}/-/ready", process)
        bodies = _batches([am_alert(i, "e2e") for i in range(total)], batch)
        cpu0, own0 = proc_cpu_s(process.pid), time.process_time()
        load = await post_all(f"{url}/api/v2/alerts", bodies, **options)
        while received[0] < total:
            if time.monotonic() > load.started + 600:
                raise TimeoutError(f"the webhook received {received[0]} of {total} alerts")
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - load.started  # from the first POST (not the client processes' start-up)
        return Run(total / elapsed, (proc_cpu_s(process.pid) - cpu0) / elapsed, load,
                   (time.process_time() - own0) / elapsed)
    finally:
        process.terminate()
        process.wait(30)
        server.close()


async def main(args: argparse.Namespace) -> None:
    total = args.alerts
    options: dict[str, Any] = {"connections": args.connections, "procs": args.client_procs, "client": args.client}
    rows, post_only, receivers = [], {}, {}
    for batch in args.batch:
        alerts = [am_alert(i, "ceiling") for i in range(total)]
        herald_bodies = [herald_payload(chunk, n * batch) for n, chunk in enumerate(_batches(alerts, batch))]
        herald_ceiling = await client_ceiling(herald_bodies, **options)
        am_ceiling = await client_ceiling(_batches(alerts, batch), **options)
        work = Path(tempfile.mkdtemp(prefix="herald-e2e-bench-"))
        try:
            (work / "h").mkdir()
            (work / "a").mkdir()
            herald = await herald_run(work / "h", total, batch, options)
            am = await alertmanager_run(work / "a", total, batch, options)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((batch, total, round(am.rate), round(herald.rate), round(herald.rate / am.rate, 2),
                     round(total / am_ceiling.seconds), round(total / herald_ceiling.seconds),
                     round(am.server_cores, 2), round(herald.server_cores, 2),
                     round(1e6 * herald.server_cores / herald.rate),
                     round(am.load.client_cores, 2), round(herald.load.client_cores, 2)))
        post_only[f"batch_{batch}"] = {"alertmanager": round(total / am.load.seconds),
                                       "herald": round(total / herald.load.seconds)}
        receivers[f"batch_{batch}"] = {"alertmanager_webhook": round(am.receiver_cores, 2),
                                       "herald_chat_client": round(herald.receiver_cores, 2)}
    report(f"end to end (alerts/s from POST to delivery, {args.connections} connections)",
           ["batch", "alerts", "alertmanager_post_to_webhook_per_s", "herald_post_to_chat_per_s", "herald_vs_am",
            "am_client_ceiling_per_s", "herald_client_ceiling_per_s", "am_cores", "herald_cores",
            "herald_cpu_us_per_alert", "client_cores_am", "client_cores_herald"],
           rows,
           target=2.0, client={"kind": args.client, "procs": args.client_procs, "connections": args.connections},
           notes="*_client_ceiling_per_s: the same client posting the same bodies to a no-op server (another "
                 "process); the POST rates alone (posting done, delivery not awaited) are in post_only_per_s; "
                 "*_cores: CPU cores the server kept busy from the first POST to the last delivery",
           post_only_per_s=post_only, receiver_cores=receivers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--batch", type=lambda text: [int(n) for n in text.split(",")], default=[1, 100],
                        help="alerts per POST, comma-separated (default 1,100: one row each)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="keep-alive connections, all processes")
    parser.add_argument("--client-procs", type=int, default=CLIENT_PROCS, help="load client processes")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="raw: pre-built requests over asyncio streams; aiohttp: pre-encoded bytes via aiohttp; "
                             "legacy: aiohttp json= (encodes inside the timed part)")
    asyncio.run(main(parser.parse_args()))
