"""Idle Herald-chat sessions held by one engine: its memory at N sessions and the time for one notification to reach
all of them, beside a bare `websockets` server holding the same number of connections in the same run.

Herald runs as its own process (`herald run --no-watch`) with one principal (a chat token, role admin), team ops with
`chat_rooms = ["ops"]` and one rule, `on alert notify ops`. For each size N (default 1,000 / 5,000 / 10,000) a fresh
engine gets N WebSocket sessions at /chat, each authenticated with the chat token and joined to room `ops`
(`{"type": "auth", "token": ..., "rooms": ["ops"]}`, answered by a `welcome`), and nothing else happens on them.
Then:
- memory: VmRSS of the `herald run` process (/proc/PID/status; not its children, such as the sandbox's Podman
  service), once it has settled (less than 1% change over 4 readings 0.5 s apart), with no session (`idle`) and
  with the N sessions (`held`);
- fan-out: one alert is POSTed to /hooks/alertmanager, which the rule notifies to ops; the time from the start of
  the POST until every one of the N clients has received that alert's `notification` frame (any frame with
  "type": "notification"; a new `event` id is a new notification, so a repeated frame is not counted twice).
  `--rounds` alerts (default 3), one after another, each waiting for the last; the median is the result and the
  time to the first client (`first_s`: the ingest and rule run before any frame goes out) is kept beside it.

The reference is a bare `websockets` (asyncio server, default settings) server in a separate process, started
from a short script that imports nothing else: it echoes every message (so the same client's auth frame comes back
as its first frame) and, on the message `broadcast R`, sends one notification-sized frame to every connection with
`websockets.broadcast`. Its fan-out is timed from sending that trigger (on one extra connection, opened after the
memory reading) until every client has the frame; it also reports how long `broadcast` took to write all the frames
(`server_write_s`: the rest of its fan-out is the kernel and the clients reading).

The clients run in `--client-procs` processes of their own (default 4), each holding N / procs connections. They are
plain asyncio protocols with a minimal WebSocket client (the handshake, masked frames out, pings answered, every
text frame parsed as JSON), far cheaper per frame than a full client library; their CPU during each fan-out is
reported (`client_cpu_s`, all processes). Reading a frame still costs a client ~30-40 us (mostly the event loop and
the recv call), so on a small machine the clients' reading bounds any fan-out from below: compare with the bare
server's row, which is close to that floor. Both servers heartbeat their
connections (Herald every 30 s, websockets every 20 s); the clients answer the pings. The script raises its
open-file limit to the hard limit (`ulimit -Hn`; the servers and clients inherit it) and stops if that cannot hold
N connections. On 127.0.0.1, one source address reaches one server port at most once per ephemeral port
(net.ipv4.ip_local_port_range, ~28,000 by default), which bounds N.
Usage: python benchmarks/chat_connections.py [--sizes 1000,5000,10000] [--rounds 3] [--client-procs 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import free_port  # noqa: E402
from _machine import machine  # noqa: E402
from webhook_ingest import am_alert, herald_payload  # noqa: E402

TOKEN = "benchmark-chat-token-0123456789"
RULE = "on alert notify ops\n"
CONFIG = f"""
data_dir = "data"
rules_dir = "rules"
[principals.bench]
roles = ["admin"]
chat_tokens = ["{TOKEN}"]
[teams.ops]
chat_rooms = ["ops"]
[sandbox]
service_idle_s = 5
"""
AUTH = json.dumps({"type": "auth", "token": TOKEN, "rooms": ["ops"]})
CONNECT_CONCURRENCY = 32  # handshakes in flight per client process (both servers listen with a backlog of ~100)
COLUMNS = ["sessions", "herald_rss_mib", "bare_rss_mib", "herald_vs_bare", "herald_kib_per_session",
           "bare_kib_per_session", "herald_fanout_s", "bare_fanout_s", "herald_idle_rss_mib", "bare_idle_rss_mib"]
_SPAWN = multiprocessing.get_context("spawn")

# The reference server: a separate process that imports websockets and nothing else of ours.
BARE_SERVER = r'''
import asyncio, json, resource, sys, time
from websockets.asyncio.server import broadcast, serve

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# About the size of Herald's notification frame for one alert (no buttons).
TEXT = "[WARNING] bench: ChatFanout - benchmark alert for every session of team ops, host0 (fingerprint 00000000)"

async def main(port):
    async def handler(ws):
        async for message in ws:
            if isinstance(message, str) and message.startswith("broadcast "):
                frame = json.dumps({"type": "notification", "event": "bare-" + message.split()[1],
                                    "rule": "rules/all.rules:1", "severity": "warning", "text": TEXT, "buttons": []})
                start = time.perf_counter()
                broadcast(server.connections, frame)
                # How long the server took to write every frame (the rest of the fan-out is the kernel and clients).
                await ws.send(json.dumps({"type": "broadcast_done", "seconds": time.perf_counter() - start}))
            else:
                await ws.send(message)

    async with serve(handler, "127.0.0.1", port) as server:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes our stdin (or dies)

asyncio.run(main(int(sys.argv[1])))
'''


# -- the client (runs in child processes) --------------------------------------------------------------------


class _Worker:
    """One client process's connections and, per notification round, how many got it and when."""

    def __init__(self) -> None:
        self.conns: list[_Conn] = []
        self.reached: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.waiting: tuple[int, int, asyncio.Event] | None = None  # round, how many, set when that many have it

    def arrived(self, n: int, now: float) -> None:
        count = self.reached[n] = self.reached.get(n, 0) + 1
        if count == 1:
            self.first[n] = now
        self.last[n] = now
        if self.waiting is not None and self.waiting[0] == n and count >= self.waiting[1]:
            self.waiting[2].set()


class _Conn(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455): handshake, auth, then count distinct notification frames."""

    def __init__(self, worker: _Worker, host: str, port: int) -> None:
        self.worker, self.host, self.port = worker, host, port
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen: set[object] = set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET /chat HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before the first frame: {exc}"))

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2))
        masked = (int.from_bytes(payload) ^ int.from_bytes((mask * (n // 4 + 1))[:n])).to_bytes(n) if n else b""
        self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self._fail(f"handshake refused: {bytes(buffer[:end]).decode(errors='replace')[:300]}")
                return
            del buffer[:end + 4]
            self.upgraded = True
            self.send(0x1, AUTH.encode())
        while len(buffer) >= 2:
            b0, b1 = buffer[0], buffer[1]
            length, offset = b1 & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = int.from_bytes(buffer[2:4]), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = int.from_bytes(buffer[2:10]), 10
            mask = b""
            if b1 & 0x80:  # servers do not mask, but accept it
                mask, offset = bytes(buffer[offset:offset + 4]), offset + 4
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset:offset + length])
            del buffer[:offset + length]
            if mask:
                payload = (int.from_bytes(payload) ^ int.from_bytes((mask * (length // 4 + 1))[:length])
                           ).to_bytes(length)
            self._frame(b0 & 0x80, b0 & 0x0F, payload, now)

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode in (0x0, 0x1, 0x2):
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), []
                self._message(message, now)
        elif opcode == 0x9:  # ping
            self.send(0xA, payload)
        elif opcode == 0x8:  # close: answer and let the server close the TCP connection
            self.send(0x8, payload[:2])
            self.closed = True
            if not self.ready.done():
                self._fail(f"closed before the first frame: {payload[2:].decode(errors='replace')}")

    def _message(self, message: bytes, now: float) -> None:
        try:
            frame = json.loads(message)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        if not self.ready.done():
            # Herald answers `welcome`; the bare server echoes the auth frame.
            if frame.get("type") == "error":
                self._fail(f"refused: {frame}")
                return
            self.ready.set_result(None)
        if frame.get("type") == "notification":
            event = frame.get("event", len(self.seen))
            if event not in self.seen:
                self.seen.add(event)
                self.worker.arrived(len(self.seen), now)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()


def _client_main(pipe: Connection, port: int, count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(_client(pipe, port, count))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        try:
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass


async def _client(pipe: Connection, port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    worker = _Worker()
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    errors: list[str] = []
    start = time.monotonic()

    async def one() -> None:
        async with limit:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Conn(worker, "127.0.0.1", port), "127.0.0.1", port), 30)
                await asyncio.wait_for(conn.ready, 30)
            except (OSError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            worker.conns.append(conn)

    await asyncio.gather(*(one() for _ in range(count)))
    pipe.send({"connected": len(worker.conns), "failed": len(errors), "errors": errors[:3],
               "seconds": time.monotonic() - start})
    while True:
        command = await asyncio.to_thread(pipe.recv)
        if command[0] == "stop":
            for conn in worker.conns:
                if conn.transport is not None:
                    conn.transport.abort()
            pipe.send({"stopped": True})
            return
        _, n, timeout = command  # ("round", n, timeout): wait until every open connection has notification n
        cpu0 = time.process_time()
        expected = sum(not c.closed for c in worker.conns)
        done = asyncio.Event()
        worker.waiting = (n, expected, done)
        if worker.reached.get(n, 0) >= expected:
            done.set()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        worker.waiting = None
        pipe.send({"round": n, "expected": expected, "received": worker.reached.get(n, 0),
                   "first": worker.first.get(n), "last": worker.last.get(n), "cpu_s": time.process_time() - cpu0,
                   "open": sum(not c.closed for c in worker.conns)})


# -- the parent ------------------------------------------------------------------------------------------------


@dataclass
class Clients:
    """The client processes and their pipes."""

    procs: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)

    async def receive(self, timeout: float, what: str) -> list[dict[str, Any]]:
        answers = []
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            while not await asyncio.to_thread(pipe.poll, 0.2):
                if not proc.is_alive():
                    raise RuntimeError(f"a client process exited ({proc.exitcode}) while {what}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from a client process after {timeout:.0f} s while {what}")
            answer = pipe.recv()
            if "error" in answer:
                raise RuntimeError(f"a client process failed while {what}: {answer['error']}")
            answers.append(answer)
        return answers

    def send(self, command: tuple[object, ...]) -> None:
        for pipe in self.pipes:
            pipe.send(command)

    async def stop(self) -> None:
        try:
            self.send(("stop",))
            await self.receive(30, "closing its connections")
        except (OSError, RuntimeError, TimeoutError):
            pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


async def start_clients(port: int, sessions: int, procs: int, timeout: float) -> tuple[Clients, float]:
    """Open `sessions` connections to the server at `port` from `procs` processes; return them once all are ready
    and how long connecting took."""
    clients = Clients()
    share = [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]
    for count in share:
        parent, child = _SPAWN.Pipe()
        proc = _SPAWN.Process(target=_client_main, args=(child, port, count), daemon=True)
        proc.start()
        clients.procs.append(proc)
        clients.pipes.append(parent)
    try:
        answers = await clients.receive(timeout, f"opening {sessions:,} connections")
    except BaseException:
        await clients.stop()
        raise
    failed = sum(a["failed"] for a in answers)
    if failed:
        await clients.stop()
        errors = [e for a in answers for e in a["errors"]]
        raise RuntimeError(f"{failed:,} of {sessions:,} connections failed, e.g. {errors[:3]}")
    return clients, max(a["seconds"] for a in answers)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def settle(pid: int, *, interval: float = 0.5, quiet: int = 4, timeout: float = 60) -> dict[str, object]:
    """Wait until VmRSS changed less than 1% over `quiet` readings in a row; return the last reading."""
    last, steady, start = rss_mib(pid), 0, time.monotonic()
    while steady < quiet and time.monotonic() - start < timeout:
        await asyncio.sleep(interval)
        now = rss_mib(pid)
        steady = steady + 1 if abs(now - last) <= 0.01 * last else 0
        last = now
    return {"rss_mib": round(last, 1), "settled": steady >= quiet}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Side:
    """One server's numbers at one size."""

    idle: dict[str, object]
    held: dict[str, object]
    after: dict[str, object]
    connect_s: float
    rounds: list[dict[str, object]]

    @property
    def fanout_s(self) -> float:
        return round(statistics.median(float(r["last_s"]) for r in self.rounds), 3)  # type: ignore[arg-type]


async def fan_out(clients: Clients, sessions: int, n: int, timeout: float, trigger: Any) -> dict[str, object]:
    """Round n: arm the clients, fire the trigger, and wait until every client has notification n."""
    clients.send(("round", n, timeout))
    await asyncio.sleep(0.2)  # let every client process take the command before the clock starts
    start = time.monotonic()
    await trigger(n)
    triggered = time.monotonic() - start
    answers = await clients.receive(timeout + 30, f"waiting for notification {n}")
    received = sum(int(a["received"]) for a in answers)
    if received < sessions:
        raise TimeoutError(f"notification {n} reached {received:,} of {sessions:,} sessions in {timeout:.0f} s "
                           f"({sum(int(a['open']) for a in answers):,} connections open)")
    return {"first_s": round(min(float(a["first"]) for a in answers) - start, 4),
            "last_s": round(max(float(a["last"]) for a in answers) - start, 4),
            "trigger_s": round(triggered, 4), "client_cpu_s": round(sum(float(a["cpu_s"]) for a in answers), 3)}


def start_herald(work: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """Write the config and rule into `work` and start `herald run` there; its output goes to a log file."""
    (work / "rules").mkdir(parents=True)
    (work / "rules" / "all.rules").write_text(RULE)
    (work / "herald.toml").write_text(CONFIG)
    log = work / "herald.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(work / "herald.toml"),
                                    "--port", str(port), "--no-watch"], cwd=work, stdout=out, stderr=out)
    return process, log


def start_bare(work: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    work.mkdir(parents=True)
    log = work / "bare.log"
    with open(log, "wb") as err:
        process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=err)
    return process, log


def wait_childless(pid: int, timeout: float) -> None:
    """Wait (at most `timeout` s) until `pid` has no child process left."""
    deadline = time.monotonic() + timeout
    while children_of(pid) and time.monotonic() < deadline:
        time.sleep(0.5)


async def herald_side(work: Path, sessions: int, args: argparse.Namespace) -> Side:
    port = free_port()
    process, log = start_herald(work, port)
    clients: Clients | None = None
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + args.start_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"herald run exited with code {process.returncode} before it was ready; "
                                       f"its output:\n{tail(log)}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"herald run not ready after {args.start_timeout:.0f} s; its output:\n"
                                       f"{tail(log)}")
                await asyncio.sleep(0.1)
            # The start-up check may start the sandbox's Podman service (a child, not counted); it exits when idle.
            await asyncio.to_thread(wait_childless, process.pid, 30)
            idle = await settle(process.pid, quiet=2)
            clients, connect_s = await start_clients(port, sessions, args.client_procs, args.connect_timeout)
            held = await settle(process.pid)

            async def post(n: int) -> None:
                body = herald_payload([am_alert(n, "ChatFanout")], 1000 * n)
                async with http.post(f"http://127.0.0.1:{port}/hooks/alertmanager", json=body) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"POST /hooks/alertmanager answered {response.status}: "
                                           f"{(await response.text())[:300]}")

            rounds = []
            for n in range(1, args.rounds + 1):
                try:
                    rounds.append(await fan_out(clients, sessions, n, args.timeout, post))
                except TimeoutError as exc:
                    raise TimeoutError(f"{exc}; herald's output:\n{tail(log)}") from None
                await asyncio.sleep(1)
            after = await settle(process.pid, quiet=2)
        return Side(idle, held, after, connect_s, rounds)
    finally:
        if clients is not None:
            await clients.stop()
        stop_process(process)


async def bare_side(work: Path, sessions: int, args: argparse.Namespace) -> Side:
    port = free_port()
    process, log = start_bare(work, port)
    clients: Clients | None = None
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), args.start_timeout)
        if line.strip() != b"ready":
            raise RuntimeError(f"the bare websockets server did not start; its output:\n{tail(log)}")
        idle = await settle(process.pid, quiet=2)
        clients, connect_s = await start_clients(port, sessions, args.client_procs, args.connect_timeout)
        held = await settle(process.pid)
        async with connect(f"ws://127.0.0.1:{port}/chat", compression=None, max_queue=None) as trigger_ws:

            async def trigger(n: int) -> None:
                await trigger_ws.send(f"broadcast {n}")

            async def server_write_s() -> float:
                while True:
                    frame = json.loads(await asyncio.wait_for(trigger_ws.recv(), args.timeout))
                    if frame.get("type") == "broadcast_done":
                        return round(float(frame["seconds"]), 4)

            rounds = []
            for n in range(1, args.rounds + 1):
                result = await fan_out(clients, sessions, n, args.timeout, trigger)
                rounds.append({**result, "server_write_s": await server_write_s()})
                await asyncio.sleep(1)
        after = await settle(process.pid, quiet=2)
        return Side(idle, held, after, connect_s, rounds)
    finally:
        if clients is not None:
            await clients.stop()
        if process.stdin is not None:
            process.stdin.close()
        stop_process(process)


def raise_open_files(sessions: int) -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it); stop if it cannot hold N."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < sessions + 500:
        raise SystemExit(f"the open-file hard limit ({hard:,}, `ulimit -Hn`) cannot hold {sessions:,} connections "
                         f"in one server; raise it (e.g. in /etc/security/limits.conf) or use smaller --sizes")
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        if sessions > high - low + 1:
            raise SystemExit(f"{sessions:,} connections from 127.0.0.1 to one port need that many ephemeral ports; "
                             f"net.ipv4.ip_local_port_range has {high - low + 1:,}")
    except (OSError, ValueError):
        pass
    return hard


async def main(args: argparse.Namespace) -> dict[str, object]:
    nofile = raise_open_files(max(args.sizes))
    load_before = os.getloadavg()  # the machine may be shared: a busy one shows in the fan-out times
    work = Path(tempfile.mkdtemp(prefix="herald-chat-conn-bench-"))
    rows, details = [], []
    try:
        for sessions in args.sizes:
            herald = await herald_side(work / f"herald-{sessions}", sessions, args)
            bare = await bare_side(work / f"bare-{sessions}", sessions, args)
            h_rss, b_rss = float(herald.held["rss_mib"]), float(bare.held["rss_mib"])  # type: ignore[arg-type]
            per = [round((float(s.held["rss_mib"]) - float(s.idle["rss_mib"])) * 1024 / sessions, 1)  # type: ignore
                   for s in (herald, bare)]
            row = (sessions, h_rss, b_rss, round(h_rss / b_rss, 2), per[0], per[1], herald.fanout_s, bare.fanout_s,
                   herald.idle["rss_mib"], bare.idle["rss_mib"])
            rows.append(row)
            for name, side in (("herald", herald), ("bare_websockets", bare)):
                details.append({"server": name, "sessions": sessions, "idle": side.idle, "held": side.held,
                                "after_fanout": side.after, "connect_s": round(side.connect_s, 2),
                                "fanout_median_s": side.fanout_s, "rounds": side.rounds})
            print(*row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = {**machine(), "kernel": platform.release()}
    result = {"benchmark": "chat_connections", "machine": info,
              "results": [dict(zip(COLUMNS, row, strict=True)) for row in rows],
              "loadavg_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
              "open_files_limit": nofile, "client_procs": args.client_procs, "rounds": args.rounds,
              "rule": RULE.strip(), "targets": {"herald_vs_bare": 1.2, "herald_fanout_s_at_10000": 0.3},
              "notes": "RSS: VmRSS of the server process, settled, with no session (idle) and with the sessions "
                       "connected and idle; kib_per_session: (RSS - idle RSS) / sessions; fan-out: median over the "
                       "rounds of the time from the POST (Herald) or the broadcast trigger (bare) until every "
                       "session had the notification frame",
              "runs": details}
    print(f"idle chat sessions, Herald vs bare websockets (RSS in MiB; fan-out: one notification to all, median of "
          f"{args.rounds}) — {info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, Python {info['python']}")
    table = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for cells in table:
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
    print(json.dumps(result))
    return result


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")], default=[1000, 5000, 10000],
                        help="numbers of sessions, comma-separated (a fresh server each)")
    parser.add_argument("--rounds", type=int, default=3, help="notifications per size and server (the median)")
    parser.add_argument("--client-procs", type=int, default=4, help="client processes sharing the connections")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for one notification to reach all")
    parser.add_argument("--connect-timeout", type=float, default=300, help="seconds to open all connections")
    parser.add_argument("--start-timeout", type=float, default=30, help="seconds for a server to start")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    options = parser.parse_args()
    outcome = asyncio.run(main(options))
    if options.json:
        Path(options.json).write_text(json.dumps(outcome, indent=2) + "\n")
