"""Command round trip over Herald's WebSocket chat at a steady rate: p50/p90/p99/max from a command to its answer.

Herald runs as its own process (`herald run`) with one rule, `on command ping reply "pong {command.user}"`, and one
principal per connection (so the commands come from several people and conversations, not one). The client sends
`/ping` open loop: command g is due at start + g/rate whatever happened to the ones before it, round robin over the
connections, and every latency is measured from that due time, so a stall shows up as latency of every command
that should have gone out during it (no coordinated omission). For each command it records the `ack` (journaled),
the `reply` frame ("pong ..."; the round trip of record) and the rule run's `result` (the last frame); `busy` and
other `error` frames are counted, and commands without an answer `--drain` seconds after the last send are
`unanswered`. The first `--warmup` seconds run at the same rate but are left out of the numbers.

The client runs in `--client-procs` processes of its own (aiohttp WebSocket, every frame parsed). Its ceiling is
measured first, unless `--no-ceiling`: the same load against a no-op chat server (another process) that answers
each command with the frames Herald sends (ack, 4 progress, reply, progress, result) and does nothing else. If
that row's latencies are close to Herald's, or `send_lag_p99_ms` (how late the client itself sent) is large, the
client is the limit. Usage: python benchmarks/command_round_trip.py [--rate 2000] [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import free_port, proc_cpu_s  # noqa: E402
from _machine import report  # noqa: E402
from webhook_ingest import wait_ready  # noqa: E402

RULE = 'on command ping reply "pong {command.user}"\n'
COLUMNS = ["server", "stage", "rate", "seconds", "connections", "sent", "answered", "p50_ms", "p90_ms", "p99_ms",
           "max_ms", "achieved_per_s", "answered_per_s", "busy", "errors", "unanswered"]
_SPAWN = multiprocessing.get_context("spawn")


def token(n: int) -> str:
    return f"benchmark-chat-token-user{n:03d}-0123456789"


def herald_config(port: int, users: int) -> str:
    lines = ['data_dir = "data"', 'rules_dir = "rules"', "[http]", f"port = {port}"]
    for n in range(users):
        lines += [f"[principals.user{n:03d}]", 'roles = ["admin"]', f'chat_tokens = ["{token(n)}"]']
    return "\n".join(lines) + "\n"


# -- the client (runs in child processes) --------------------------------------------------------------------


def _client_main(pipe: Connection, url: str, conns: list[int], total_conns: int, rate: float, count: int,
                 drain: float) -> None:
    try:
        result: object = asyncio.run(_client(pipe, url, conns, total_conns, rate, count, drain))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        result = f"{type(exc).__name__}: {exc}"
    pipe.send(result)


async def _client(pipe: Connection, url: str, conns: list[int], total_conns: int, rate: float, count: int,
                  drain: float) -> dict[str, Any]:
    """Drive the connections `conns` (global indices); connection c sends commands c, c + C, c + 2C, ..."""
    mine = [g for c in conns for g in range(c, count, total_conns)]
    sent: dict[int, float] = {}
    ack: dict[int, float] = {}
    reply: dict[int, float] = {}
    result: dict[int, float] = {}
    errors: dict[int, str] = {}
    other = {"unmatched": 0}
    finished = asyncio.Event()
    left = [len(mine)]
    frames = [0]

    def done(g: int) -> None:
        left[0] -= 1
        if left[0] == 0:
            finished.set()

    async with aiohttp.ClientSession() as session:
        sockets = {}
        for c in conns:
            ws = await session.ws_connect(url, max_msg_size=0, heartbeat=None)
            await ws.send_str(json.dumps({"type": "auth", "token": token(c)}))
            welcome = json.loads((await ws.receive()).data)
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"not welcome: {welcome}")
            sockets[c] = ws

        async def receiver(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                now = time.monotonic()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frames[0] += 1
                frame = json.loads(msg.data)
                kind = frame.get("type")
                if kind == "ack":
                    ack[int(frame["id"])] = now
                    continue
                if kind == "progress":
                    continue
                ref = frame.get("in_reply_to")
                if ref is None:
                    other["unmatched"] += 1
                    continue
                g = int(ref)
                if kind == "reply":
                    reply.setdefault(g, now)
                elif kind == "result":
                    result[g] = now
                    done(g)
                elif kind == "error" and g not in errors:
                    errors[g] = str(frame.get("code"))
                    done(g)

        async def sender(c: int, ws: aiohttp.ClientWebSocketResponse, t0: float) -> None:
            for g in range(c, count, total_conns):
                due = t0 + g / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[g] = time.monotonic()
                await ws.send_str(f'{{"type":"message","id":"{g}","text":"/ping"}}')

        receivers = [asyncio.ensure_future(receiver(ws)) for ws in sockets.values()]
        pipe.send("ready")
        t0 = await asyncio.to_thread(pipe.recv)  # the same start for every process (CLOCK_MONOTONIC is system-wide)
        cpu0 = time.process_time()
        await asyncio.gather(*(sender(c, ws, t0) for c, ws in sockets.items()))
        last_send = time.monotonic()
        if left[0]:
            try:
                await asyncio.wait_for(finished.wait(), drain)
            except TimeoutError:
                pass
        end, cpu = time.monotonic(), time.process_time() - cpu0
        for ws in sockets.values():
            await ws.close()
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
    return {"t0": t0, "last_send": last_send, "end": end, "cpu": cpu, "frames": frames[0],
            "unmatched": other["unmatched"], "sent": sent, "ack": ack, "reply": reply, "result": result,
            "errors": errors}


# -- the no-op chat server (a child process) -----------------------------------------------------------------


def _noop_main(port: int, ready: Any) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str(json.dumps({"type": "welcome", "session": "s", "principal": "p", "roles": [], "rooms": []}))
        run = '"run": "01M8F9QTZ4YS3W80HRWE388256", "rule": "rules/all.rules:1"'
        async for msg in ws:
            frame = json.loads(msg.data)
            mid = json.dumps(frame.get("id"))
            await ws.send_str(f'{{"type": "ack", "id": {mid}, "event": "01M8F9QTZ4K1HHZD1C05Q1DJMM"}}')
            for state in ("INIT", "CHECK_PERMISSION", "VALIDATE_PARAMS", "EXECUTE"):
                await ws.send_str(f'{{"type": "progress", "in_reply_to": {mid}, {run}, "state": "{state}", '
                                  f'"detail": ""}}')
            await ws.send_str(f'{{"type": "reply", "in_reply_to": {mid}, "text": "pong p"}}')
            await ws.send_str(f'{{"type": "progress", "in_reply_to": {mid}, {run}, "state": "REPORT_RESULT", '
                              f'"detail": "replied"}}')
            await ws.send_str(f'{{"type": "result", "in_reply_to": {mid}, {run}, "ok": true, "text": "replied", '
                              f'"task": null, "exit_code": null, "output": ""}}')
        return ws

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/chat", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


# -- driving a run and summing it up -------------------------------------------------------------------------


@dataclass
class Outcome:
    rows: list[tuple[object, ...]]
    detail: dict[str, object]


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms) + 0.5) - 1))]


async def drive(url: str, args: argparse.Namespace, server: str, pid: int | None) -> Outcome:
    rate, connections = args.rate, args.connections
    count = round(rate * (args.warmup + args.seconds))
    procs = max(1, min(args.client_procs, connections))
    children = []
    for p in range(procs):
        parent_end, child_end = _SPAWN.Pipe()
        process = _SPAWN.Process(target=_client_main, daemon=True,
                                 args=(child_end, url, list(range(p, connections, procs)), connections, rate, count,
                                       args.drain))
        process.start()
        child_end.close()
        children.append((process, parent_end))
    try:
        for _, pipe in children:
            message = await asyncio.to_thread(_receive, pipe, 60)
            if message != "ready":
                raise RuntimeError(f"chat client failed to start: {message}")
        t0 = time.monotonic() + 0.2
        cpu0 = proc_cpu_s(pid) if pid else 0.0
        for _, pipe in children:
            pipe.send(t0)
        results = [await asyncio.to_thread(_receive, pipe, args.warmup + args.seconds + args.drain + 120)
                   for _, pipe in children]
        cpu1 = proc_cpu_s(pid) if pid else 0.0
    finally:
        for process, pipe in children:
            pipe.close()
            if process.is_alive():
                process.terminate()
            process.join(5)
    for r in results:
        if not isinstance(r, dict):
            raise RuntimeError(f"chat client failed: {r}")
    merged: dict[str, dict[int, Any]] = {k: {} for k in ("sent", "ack", "reply", "result", "errors")}
    for r in results:
        for k in merged:
            merged[k].update(r[k])
    first = round(rate * args.warmup)  # commands due in the warm-up are left out
    measured = range(first, count)
    due = {g: t0 + g / rate for g in measured}
    sent = [g for g in measured if g in merged["sent"]]
    send_span = max(merged["sent"][g] for g in sent) - min(merged["sent"][g] for g in sent) if len(sent) > 1 else 0
    lag = sorted((merged["sent"][g] - due[g]) * 1000 for g in sent)
    errors = [merged["errors"][g] for g in measured if g in merged["errors"]]
    busy = sum(1 for e in errors if e == "busy")
    unanswered = sum(1 for g in measured if g not in merged["result"] and g not in merged["errors"])
    finished = [merged["result"][g] for g in measured if g in merged["result"]]
    answered_rate = len(finished) / (max(finished) - due[first]) if finished else 0.0
    wall = max(r["end"] for r in results) - t0  # first due send to the last answer (or the end of the drain)
    client_cores = sum(r["cpu"] for r in results) / wall
    server_cores = (cpu1 - cpu0) / wall if pid else None
    rows = []
    for stage in ("ack", "reply", "result"):
        ms = sorted((merged[stage][g] - due[g]) * 1000 for g in measured if g in merged[stage])
        rows.append((server, stage, rate, args.seconds, connections, len(sent), len(ms),
                     round(_percentile(ms, 0.5), 2), round(_percentile(ms, 0.9), 2), round(_percentile(ms, 0.99), 2),
                     round(ms[-1], 2) if ms else float("nan"), round(len(sent) / send_span) if send_span else 0,
                     round(answered_rate), busy, len(errors) - busy, unanswered))
    detail = {"server": server, "send_lag_p99_ms": round(_percentile(lag, 0.99), 2),
              "send_lag_max_ms": round(lag[-1], 2) if lag else None, "client_procs": procs,
              "client_cores": round(client_cores, 2), "frames_received": sum(r["frames"] for r in results),
              "unmatched_frames": sum(r["unmatched"] for r in results), "warmup_commands": first,
              "server_cores": None if server_cores is None else round(server_cores, 2),
              "error_codes": sorted(set(errors))}
    return Outcome(rows, detail)


def _receive(pipe: Connection, timeout: float) -> object:
    if not pipe.poll(timeout):
        raise TimeoutError(f"chat client silent for {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        return "the client process died"


async def main(args: argparse.Namespace) -> None:
    rows: list[tuple[object, ...]] = []
    details = []
    if not args.no_ceiling:
        port, ready = free_port(), _SPAWN.Event()
        noop = _SPAWN.Process(target=_noop_main, args=(port, ready), daemon=True)
        noop.start()
        try:
            if not await asyncio.to_thread(ready.wait, 30):
                raise RuntimeError("the no-op chat server did not start")
            outcome = await drive(f"ws://127.0.0.1:{port}/chat", args, "no-op (client ceiling)", noop.pid)
            rows += [r for r in outcome.rows if r[1] == "reply"]
            details.append(outcome.detail)
        finally:
            noop.terminate()
            noop.join(5)
    if args.ceiling_only:
        report(f"command round trip client ceiling (open loop, {args.rate:,.0f} commands/s, {args.connections} "
               f"connections, no-op chat server)", COLUMNS, rows, runs=details, warmup_s=args.warmup)
        return
    work = Path(tempfile.mkdtemp(prefix="herald-rtt-bench-"))
    port = free_port()
    (work / "rules").mkdir()
    (work / "rules" / "ping.rules").write_text(RULE)
    (work / "herald.toml").write_text(herald_config(port, args.connections))
    herald = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(work / "herald.toml"),
                               "--no-watch"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/healthz", herald)
        outcome = await drive(f"ws://127.0.0.1:{port}/chat", args, "herald", herald.pid)
        rows = outcome.rows + rows
        details.insert(0, outcome.detail)
    finally:
        herald.terminate()
        herald.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(f"command round trip over /chat (open loop, {args.rate:,.0f} commands/s, {args.connections} connections, "
           f"latency from the scheduled send)", COLUMNS, rows,
           runs=details, rule=RULE.strip(), warmup_s=args.warmup)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000, help="commands per second, all connections together")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds at the same rate left out of the numbers")
    parser.add_argument("--connections", type=int, default=8, help="WebSocket connections, one principal each")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the connections")
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for answers after the last send")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the run against the no-op chat server")
    parser.add_argument("--ceiling-only", action="store_true", help="only the run against the no-op chat server")
    asyncio.run(main(parser.parse_args()))
