"""Memory after N open (firing, unresolved) alerts: Herald against Prometheus Alertmanager, same alerts, same client.

Each side gets N distinct firing alerts (default 20,000), posted in batches of 100 over 4 connections by the
benchmarks' load client (a 503 from Herald's admission limit is retried after its Retry-After). Then the script
waits until the alerts are handled and the resident memory stops moving, and reads it from /proc: VmRSS from
/proc/PID/status and PSS from /proc/PID/smaps_rollup (summed over the process and any children it started).

Herald runs as its own process (`herald run`) with one rule, `on alert notify ops with buttons`, so every alert
is journaled, matched, and notified with signed Acknowledge / Mute buttons to team ops, whose one chat client
(in this process) receives the notifications; "handled" means every alert event is marked handled in the journal
(read from its SQLite file, read only) and, with the chat client, every notification arrived. Alertmanager 0.25
runs twice, clustering off: with no receiver (`route: {receiver: none}`: the alerts are only stored), and with a
webhook per alert (`group_by: ['...']`, a local receiver counting them, as in end_to_end.py), which also keeps
one aggregation group per alert; "handled" means `alertmanager_alerts{state="active"}` reports N (and, with the
webhook, every alert reached the receiver). Alertmanager counts an alert active once its group is first flushed, so
with no receiver (default group_wait, 30 s) that takes about 30 s: handled_s measures that wait, not a cost.
Data folder sizes are the files' apparent sizes, SQLite WAL included. Herald's start-up check starts the sandbox's
Podman service if none runs, and no task runs here, so it exits after its idle timeout (`[sandbox] service_idle_s`,
set to 5 s here instead of the default 60 s so the run is short): the idle reading waits for that.
Usage: python benchmarks/memory_open_alerts.py [--alerts 20000] [--batch 100] [--no-chat-client]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import free_port, post_all, serve_null  # noqa: E402
from _machine import report  # noqa: E402
from webhook_ingest import AM_MINIMAL_CONFIG, am_alert, herald_payload, start_alertmanager, wait_ready  # noqa: E402

TOKEN = "benchmark-chat-token-0123456789"
RULE = "on alert notify ops with buttons\n"
CONFIG = f"""
data_dir = "data"
rules_dir = "rules"
[http]
port = {{port}}
[alerts]
storm_threshold = 0  # one notification per open alert (the worst case for memory), not one storm digest
[principals.bench]
roles = ["admin"]
chat_tokens = ["{TOKEN}"]
[teams.ops]
members = ["bench"]
[sandbox]
service_idle_s = 5
"""
AM_WEBHOOK_CONFIG = """
route: {{receiver: hook, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: hook
    webhook_configs: [{{url: "http://127.0.0.1:{port}/hook", send_resolved: false, max_alerts: 0}}]
"""
MIB = 1024 * 1024


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _kib(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def memory(pid: int) -> dict[str, float | int | None]:
    """RSS and PSS in MiB of `pid` and its descendants (PSS None where smaps_rollup is unreadable)."""
    pids = descendants(pid)
    rss = [_kib(f"/proc/{p}/status", "VmRSS") for p in pids]
    pss = [_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids]
    return {"rss_mib": round(sum(r or 0 for r in rss) / 1024, 1),
            "pss_mib": None if any(p is None for p in pss) else round(sum(p or 0 for p in pss) / 1024, 1),
            "processes": len(pids)}


def folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB, 1)


async def settle(pid: int, *, interval: float = 0.5, quiet: int = 4, timeout: float = 60) -> dict[str, object]:
    """Wait until RSS changed less than 1% over `quiet` samples in a row; return the last reading."""
    last = memory(pid)
    steady, start = 0, time.monotonic()
    while steady < quiet and time.monotonic() - start < timeout:
        await asyncio.sleep(interval)
        now = memory(pid)
        steady = steady + 1 if abs(float(now["rss_mib"]) - float(last["rss_mib"])) <= 0.01 * float(last["rss_mib"]) \
            else 0
        last = now
    return {**last, "settled": steady >= quiet}


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def am_metric(url: str, name: str) -> float | None:
    """One sample of a Prometheus metric (the first line starting with `name`) from Alertmanager's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return None


async def herald_run(work: Path, alerts: list[list[dict[str, object]]], total: int, args: argparse.Namespace
                     ) -> tuple[tuple[object, ...], dict[str, object]]:
    port = free_port()
    (work / "rules").mkdir()
    (work / "rules" / "alerts.rules").write_text(RULE)
    (work / "herald.toml").write_text(CONFIG.format(port=port))
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(work / "herald.toml"),
                                "--no-watch"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    received = 0
    counter = ws = None
    try:
        await wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        # The start-up check may have started the sandbox's Podman service; unused, it exits when idle (5 s here,
        # the default 60 s only makes that later). The readings are of that steady state.
        async def alone() -> bool:
            return len(descendants(process.pid)) == 1

        await until(alone, "the sandbox's Podman service has not exited when idle", 30)
        idle = await settle(process.pid, quiet=2)
        if not args.no_chat_client:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/chat", max_size=None)
            await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
            await ws.recv()

            async def count() -> None:
                nonlocal received
                async for raw in ws:
                    if '"notification"' in raw:
                        received += 1

            counter = asyncio.ensure_future(count())
        bodies = [herald_payload(chunk, n * args.batch) for n, chunk in enumerate(alerts)]
        load = await post_all(f"http://127.0.0.1:{port}/hooks/alertmanager", bodies, connections=args.connections,
                              retry_busy=True)
        start, posted = load.started, load.seconds
        db = sqlite3.connect(f"file:{work / 'data' / 'herald.db'}?mode=ro", uri=True)

        async def handled() -> bool:
            accepted, done = db.execute("SELECT sum(status = 'accepted'), sum(status = 'handled') FROM events "
                                        "WHERE kind = 'alert'").fetchone()
            return (done or 0) >= total and not accepted and (args.no_chat_client or received >= total)

        await until(handled, "Herald has not handled every alert", args.timeout)
        handled_s = time.monotonic() - start
        kinds = dict(db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
        db.close()
        after = await settle(process.pid)
        row = ("herald", total, idle["rss_mib"], after["rss_mib"], after["pss_mib"],
               round(float(after["rss_mib"]) - float(idle["rss_mib"]), 1),
               round((float(after["rss_mib"]) - float(idle["rss_mib"])) * MIB / total),
               folder_mib(work / "data"), round(posted, 2), round(handled_s, 1))
        detail = {"system": "herald", "idle": idle, "after": after, "busy_retries": load.retries,
                  "notifications_received": None if args.no_chat_client else received, "journal_events": kinds}
        return row, detail
    finally:
        if counter is not None:
            counter.cancel()
        if ws is not None:
            await ws.close()
        process.terminate()
        process.wait(30)


async def alertmanager_run(work: Path, alerts: list[list[dict[str, object]]], total: int, args: argparse.Namespace,
                           webhook: bool) -> tuple[tuple[object, ...], dict[str, object]]:
    received = [0]
    server = None
    config = AM_MINIMAL_CONFIG
    if webhook:
        hook_port = free_port()
        server = await serve_null(hook_port, received, b'"fingerprint":')
        config = AM_WEBHOOK_CONFIG.format(port=hook_port)
    process, url = start_alertmanager(work, config)
    try:
        await wait_ready(f"{url}/-/ready", process)
        idle = await settle(process.pid, quiet=2)
        load = await post_all(f"{url}/api/v2/alerts", alerts, connections=args.connections, retry_busy=True)
        start, posted = load.started, load.seconds

        async def handled() -> bool:
            active = await am_metric(url, 'alertmanager_alerts{state="active"}')
            return (active or 0) >= total and (not webhook or received[0] >= total)

        await until(handled, "Alertmanager has not taken every alert", args.timeout)
        handled_s = time.monotonic() - start
        after = await settle(process.pid)
        name = "alertmanager (webhook per alert)" if webhook else "alertmanager (no receiver)"
        row = (name, total, idle["rss_mib"], after["rss_mib"], after["pss_mib"],
               round(float(after["rss_mib"]) - float(idle["rss_mib"]), 1),
               round((float(after["rss_mib"]) - float(idle["rss_mib"])) * MIB / total),
               folder_mib(work / "am"), round(posted, 2), round(handled_s, 1))
        heap = {k: await am_metric(url, f"go_memstats_{k}_bytes") for k in ("heap_inuse", "heap_idle", "sys")}
        detail = {"system": name, "idle": idle, "after": after, "busy_retries": load.retries,
                  "webhook_alerts_received": received[0] if webhook else None,
                  "go_memstats_mib": {k: None if v is None else round(v / MIB, 1) for k, v in heap.items()}}
        return row, detail
    finally:
        process.terminate()
        process.wait(30)
        if server is not None:
            server.close()


async def main(args: argparse.Namespace) -> None:
    total = args.alerts
    work = Path(tempfile.mkdtemp(prefix="herald-memory-bench-"))
    rows, details = [], []
    try:
        for name in ("herald", "am", "am-webhook"):
            alerts = [am_alert(i, f"mem-{name}") for i in range(total)]
            chunks = [alerts[i:i + args.batch] for i in range(0, total, args.batch)]
            (work / name).mkdir()
            if name == "herald":
                row, detail = await herald_run(work / name, chunks, total, args)
            else:
                row, detail = await alertmanager_run(work / name, chunks, total, args, webhook=name == "am-webhook")
            rows.append(row)
            details.append(detail)
            print(*row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"memory with {total:,} open alerts (batches of {args.batch}; RSS/PSS of the process tree, MiB)",
           ["system", "alerts", "idle_rss_mib", "rss_mib", "pss_mib", "rss_growth_mib", "bytes_per_alert",
            "data_mib", "post_s", "handled_s"], rows, runs=details, rule=RULE.strip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100, help="alerts per POST")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--no-chat-client", action="store_true", help="no chat client in team ops")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the alerts to be handled")
    asyncio.run(main(parser.parse_args()))
