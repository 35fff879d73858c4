"""Webhook ingest, durable before the 2xx: Herald against a real Prometheus Alertmanager, same client, same run.

Each side gets the same distinct alerts, posted over 4 keep-alive connections, one alert per POST and 100 per POST.
Herald runs as its own process (`herald run`, SQLite journal with synchronous=FULL); Alertmanager 0.25 with
clustering off. The load client (benchmarks/_load.py) pre-encodes every request before the clock starts and runs
in its own process(es); its ceiling, the rate it reaches against a server that does no work with the same bodies,
is reported next to each result, with the CPU the client and each server used: a rate close to the ceiling, or a
client near 1 core per process, is bound by the client rather than by the server.
Usage: python benchmarks/webhook_ingest.py [--alerts N] [--connections 4] [--client-procs 1] [--client raw]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import CLIENTS, client_ceiling, free_port, post_all, proc_cpu_s  # noqa: E402
from _machine import report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = 4
CLIENT_PROCS = 1
AM_MINIMAL_CONFIG = "route: {receiver: none}\nreceivers: [{name: none}]\n"

__all__ = ["am_alert", "blast", "free_port", "herald_payload", "start_alertmanager", "wait_ready"]


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


def start_alertmanager(work: Path, config: str = AM_MINIMAL_CONFIG) -> tuple[subprocess.Popen[bytes], str]:
    """Start Alertmanager (clustering off) with `config`, its storage in `work`; return it and its base URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise SystemExit("prometheus-alertmanager is not installed (bash .ci/setup installs it)")
    port = free_port()
    (work / "am").mkdir(exist_ok=True)
    (work / "am.yml").write_text(config)
    process = subprocess.Popen([binary, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


async def blast(bodies: list[object], url: str, *, connections: int = CONNECTIONS, procs: int = CLIENT_PROCS,
                client: str = "raw") -> float:
    """POST every body (encoded before the clock starts); return seconds taken. Any non-2xx aborts."""
    return (await post_all(url, bodies, connections=connections, procs=procs, client=client)).seconds


async def main(args: argparse.Namespace) -> None:
    total, connections, procs, client = args.alerts, args.connections, args.client_procs, args.client
    work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    herald_port = free_port()
    am, am_url = start_alertmanager(work)
    herald = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--port", str(herald_port),
                               "--data", str(work / "data"), "--rules", str(REPO / "rules")],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        await wait_ready(f"{am_url}/-/ready", am)
        await wait_ready(f"http://127.0.0.1:{herald_port}/healthz", herald)
        for batch in (1, 100):
            run = f"b{batch}"
            alerts = [am_alert(i, run) for i in range(total)]
            chunks = [alerts[i:i + batch] for i in range(0, total, batch)]
            herald_bodies = [herald_payload(c, n * batch) for n, c in enumerate(chunks)]
            options = {"connections": connections, "procs": procs, "client": client}
            am_ceiling = await client_ceiling(chunks, **options)
            herald_ceiling = await client_ceiling(herald_bodies, **options)
            cpu0 = proc_cpu_s(am.pid)
            am_load = await post_all(f"{am_url}/api/v2/alerts", chunks, **options)
            am_cores = (proc_cpu_s(am.pid) - cpu0) / am_load.seconds
            cpu0 = proc_cpu_s(herald.pid)
            herald_load = await post_all(f"http://127.0.0.1:{herald_port}/hooks/alertmanager", herald_bodies, **options)
            herald_cores = (proc_cpu_s(herald.pid) - cpu0) / herald_load.seconds
            am_s, herald_s = am_load.seconds, herald_load.seconds
            rows.append((batch, total, round(total / am_s), round(total / herald_s), round(am_s / herald_s, 2),
                         round(total / am_ceiling.seconds), round(total / herald_ceiling.seconds),
                         round(am_cores, 2), round(herald_cores, 2),
                         round(am_load.client_cores, 2), round(herald_load.client_cores, 2)))
    finally:
        for process in (herald, am):
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(f"webhook ingest (alerts/s, durable before 2xx, {connections} connections)",
           ["batch", "alerts", "alertmanager_per_s", "herald_per_s", "herald_vs_am",
            "am_client_ceiling_per_s", "herald_client_ceiling_per_s", "am_cores", "herald_cores",
            "client_cores_am", "client_cores_herald"], rows,
           targets={"batch_1": 1.5, "batch_100": 2.0},
           client={"kind": client, "procs": procs, "connections": connections},
           notes="*_client_ceiling_per_s: the same client posting the same bodies to a no-op server (another "
                 "process); *_cores: CPU cores each process kept busy during its run")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="keep-alive connections, all processes")
    parser.add_argument("--client-procs", type=int, default=CLIENT_PROCS, help="load client processes")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="raw: pre-built requests over asyncio streams; aiohttp: pre-encoded bytes via aiohttp; "
                             "legacy: aiohttp json= (encodes inside the timed part)")
    asyncio.run(main(parser.parse_args()))
