"""Webhook ingest, durable before the 2xx: Herald against a real Prometheus Alertmanager, same client, same run.

Each side gets the same distinct alerts, posted over 4 keep-alive connections, one alert per POST and 100 per POST.
Herald runs as its own process (`herald run`, SQLite journal with synchronous=FULL); Alertmanager 0.25 with
clustering off. The load client (benchmarks/_load.py) pre-encodes every request before the clock starts and runs
in its own process(es); its ceiling, the rate it reaches against a server that does no work with the same bodies,
is reported next to each result, with the CPU the client and each server used: a rate close to the ceiling, or a
client near 1 core per process, is bound by the client rather than by the server. So is the durable ceiling: the
same client against a server that does nothing but group commit (append the body, fdatasync, answer), which bounds
any server that is durable before its 2xx on this disk with this many connections.
Usage: python benchmarks/webhook_ingest.py [--alerts N] [--rounds 3] [--connections 4] [--client-procs 1] [--client raw]
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


async def _measure(server: subprocess.Popen[bytes], url: str, bodies: list[object],
                   options: dict[str, object]) -> tuple[float, float, float]:
    """Post `bodies`; return (seconds, server cores, client cores)."""
    cpu0 = proc_cpu_s(server.pid)
    load = await post_all(url, bodies, **options)  # type: ignore[arg-type]
    return load.seconds, (proc_cpu_s(server.pid) - cpu0) / load.seconds, load.client_cores


def _median(runs: list[tuple[float, float, float]], total: int) -> tuple[int, float, float]:
    """The median round by rate: (alerts/s, server cores, client cores) of that round."""
    seconds, cores, client = sorted(runs)[len(runs) // 2]
    return round(total / seconds), round(cores, 2), round(client, 2)


def _spread(runs: list[tuple[float, float, float]], total: int) -> str:
    rates = sorted(round(total / seconds) for seconds, _, _ in runs)
    return f"{rates[0]}-{rates[-1]}"


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
        options = {"connections": connections, "procs": procs, "client": client}
        for batch in (1, 100):
            am_runs, herald_runs = [], []
            for r in range(args.rounds):  # interleaved, so a noisy minute hits both sides alike
                run = f"b{batch}r{r}"
                alerts = [am_alert(i, run) for i in range(total)]
                chunks = [alerts[i:i + batch] for i in range(0, total, batch)]
                herald_bodies = [herald_payload(c, (r * total) + n * batch) for n, c in enumerate(chunks)]
                if r == 0:
                    am_ceiling = await client_ceiling(chunks, **options)
                    herald_ceiling = await client_ceiling(herald_bodies, **options)
                    durable_ceiling = await client_ceiling(herald_bodies, **options, server="durable")
                am_runs.append(await _measure(am, f"{am_url}/api/v2/alerts", chunks, options))
                herald_runs.append(await _measure(herald, f"http://127.0.0.1:{herald_port}/hooks/alertmanager",
                                                  herald_bodies, options))
            am_rate, am_cores, am_client = _median(am_runs, total)
            herald_rate, herald_cores, herald_client = _median(herald_runs, total)
            rows.append((batch, total, args.rounds, am_rate, _spread(am_runs, total), herald_rate,
                         _spread(herald_runs, total), round(herald_rate / am_rate, 2),
                         round(total / am_ceiling.seconds), round(total / herald_ceiling.seconds),
                         round(total / durable_ceiling.seconds),
                         am_cores, herald_cores, round(1e6 * herald_cores / herald_rate),
                         am_client, herald_client))
    finally:
        for process in (herald, am):
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(f"webhook ingest (alerts/s, durable before 2xx, {connections} connections, median of rounds)",
           ["batch", "alerts", "rounds", "alertmanager_per_s", "am_range", "herald_per_s", "herald_range",
            "herald_vs_am", "am_client_ceiling_per_s", "herald_client_ceiling_per_s", "durable_noop_per_s",
            "am_cores", "herald_cores",
            "herald_cpu_us_per_alert", "client_cores_am", "client_cores_herald"], rows,
           targets={"batch_1": 1.5, "batch_100": 2.0},
           client={"kind": client, "procs": procs, "connections": connections},
           notes="rates are the median of the rounds (each round posts fresh alerts to both, Alertmanager first), "
                 "*_range the lowest-highest round; *_client_ceiling_per_s: the same client posting the same bodies "
                 "to a no-op server (another process); durable_noop_per_s: the same client and bodies against a "
                 "no-op server that only appends each body to a file and answers after an fdatasync covering it "
                 "(group commit, nothing else): the ceiling of any server durable before its 2xx; *_cores: CPU "
                 "cores each process kept busy during its median round; herald_cpu_us_per_alert: Herald's CPU "
                 "time per alert")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side and batch size (the median is kept)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="keep-alive connections, all processes")
    parser.add_argument("--client-procs", type=int, default=CLIENT_PROCS, help="load client processes")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="raw: pre-built requests over asyncio streams; aiohttp: pre-encoded bytes via aiohttp; "
                             "legacy: aiohttp json= (encodes inside the timed part)")
    asyncio.run(main(parser.parse_args()))
