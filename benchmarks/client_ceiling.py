"""The load client's own ceiling: how fast each client posts the webhook benchmarks' bodies to a server that does
no work, and to a real Prometheus Alertmanager, with 1 and 2 client processes.

Clients (benchmarks/_load.py): `legacy` (aiohttp post(json=...), the JSON encoding inside the timed part, as the
benchmarks used to do), `aiohttp` (pre-encoded bytes through aiohttp) and `raw` (pre-built HTTP/1.1 requests
over asyncio streams). Targets: `null-raw` (an asyncio protocol answering 200, in its own process), `null-aiohttp`
(a trivial aiohttp app, in its own process) and `alertmanager`. A rate against the no-op server well above the
rate against Alertmanager means Alertmanager, not the client, set that number. `client_cores` is the client
processes' CPU time over the wall time: near the number of processes means the client was saturated.
Usage: python benchmarks/client_ceiling.py [--alerts N] [--batch 1] [--connections 4] [--procs 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import CLIENTS, null_server, post_all, proc_cpu_s  # noqa: E402
from _machine import report  # noqa: E402
from webhook_ingest import am_alert, start_alertmanager, wait_ready  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    procs = [int(p) for p in args.procs.split(",")]
    clients = args.clients.split(",")
    targets = args.targets.split(",")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="herald-ceiling-"))
    am = None
    try:
        for target in targets:
            if target == "alertmanager":
                am, am_url = start_alertmanager(work)
                await wait_ready(f"{am_url}/-/ready", am)
                url = f"{am_url}/api/v2/alerts"
            for client in clients:
                for n in procs:
                    run = f"{target}-{client}-{n}"
                    alerts = [am_alert(i, run) for i in range(args.alerts)]
                    bodies = [alerts[i:i + args.batch] for i in range(0, args.alerts, args.batch)]
                    if target == "alertmanager":
                        cpu0 = proc_cpu_s(am.pid)
                        load = await post_all(url, bodies, connections=args.connections, procs=n, client=client)
                        server_cores = (proc_cpu_s(am.pid) - cpu0) / load.seconds
                    else:
                        async with null_server(target.removeprefix("null-")) as base:
                            load = await post_all(f"{base}/api/v2/alerts", bodies, connections=args.connections,
                                                  procs=n, client=client)
                        server_cores = None
                    rows.append((target, client, load.procs, args.connections, args.batch, args.alerts,
                                 round(args.alerts / load.seconds), round(load.requests / load.seconds),
                                 round(load.client_cores, 2), "" if server_cores is None else round(server_cores, 2)))
                    print(*rows[-1], flush=True)
            if am is not None:
                am.terminate()
                am.wait(30)
                am = None
    finally:
        if am is not None:
            am.terminate()
            am.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(f"load client ceiling (batch {args.batch}, {args.connections} connections)",
           ["target", "client", "procs", "connections", "batch", "alerts", "alerts_per_s", "requests_per_s",
            "client_cores", "server_cores"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--procs", default="1,2", help="comma-separated client process counts")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, from {CLIENTS}")
    parser.add_argument("--targets", default="null-raw,null-aiohttp,alertmanager",
                        help="comma-separated, from null-raw, null-aiohttp, alertmanager")
    asyncio.run(main(parser.parse_args()))
