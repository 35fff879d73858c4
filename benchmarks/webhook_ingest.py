"""Webhook ingest, durable before the 2xx: Herald against a real Prometheus Alertmanager, same client, same run.

Each side gets the same distinct alerts, posted over 4 keep-alive connections, one alert per POST and 100 per POST.
Herald runs as its own process (`herald run`, SQLite journal with synchronous=FULL); Alertmanager 0.25 with
clustering off. Usage: python benchmarks/webhook_ingest.py [--alerts N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def am_alert(i: int, run: str) -> dict[str, object]:
    return {"labels": {"alertname": f"Bench{run}", "instance": f"host{i}", "severity": "warning", "service": "bench"},
            "annotations": {"summary": f"benchmark alert {i}"},
            "startsAt": datetime.now(UTC).isoformat()}


def herald_payload(alerts: list[dict[str, object]], offset: int) -> dict[str, object]:
    items = [{"status": "firing", "labels": a["labels"], "annotations": a["annotations"], "startsAt": a["startsAt"],
              "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{offset + i:016x}"}
             for i, a in enumerate(alerts)]
    return {"receiver": "bench", "status": "firing", "alerts": items, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "", "version": "4", "groupKey": "{}", "truncatedAlerts": 0}


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited early")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


async def blast(bodies: list[object], url: str) -> float:
    """POST every body over CONNECTIONS connections; return seconds taken. Any non-200 aborts."""
    queue: asyncio.Queue[object] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, json=body) as response:
                    if response.status != 200:
                        raise RuntimeError(f"{url}: {response.status} {await response.text()}")
                    await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return time.perf_counter() - start


async def main(total: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    herald_port, am_port = free_port(), free_port()
    (work / "am").mkdir()
    (work / "am.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    am_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if am_bin is None:
        raise SystemExit("prometheus-alertmanager is not installed (bash .ci/setup installs it)")
    am = subprocess.Popen([am_bin, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    herald = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--port", str(herald_port),
                               "--data", str(work / "data"), "--rules", str(REPO / "rules")],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        await wait_ready(f"http://127.0.0.1:{am_port}/-/ready", am)
        await wait_ready(f"http://127.0.0.1:{herald_port}/healthz", herald)
        for batch in (1, 100):
            run = f"b{batch}"
            alerts = [am_alert(i, run) for i in range(total)]
            chunks = [alerts[i:i + batch] for i in range(0, total, batch)]
            am_s = await blast(chunks, f"http://127.0.0.1:{am_port}/api/v2/alerts")
            herald_bodies = [herald_payload(c, n * batch) for n, c in enumerate(chunks)]
            herald_s = await blast(herald_bodies, f"http://127.0.0.1:{herald_port}/hooks/alertmanager")
            rows.append((batch, total, round(total / am_s), round(total / herald_s), round(am_s / herald_s, 2)))
    finally:
        for process in (herald, am):
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report("webhook ingest (alerts/s, durable before 2xx, 4 connections)",
           ["batch", "alerts", "alertmanager_per_s", "herald_per_s", "herald_vs_am"], rows,
           targets={"batch_1": 1.5, "batch_100": 2.0})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    asyncio.run(main(parser.parse_args().alerts))
