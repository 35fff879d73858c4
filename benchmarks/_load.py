"""A cheap HTTP load client shared by the webhook benchmarks, and the no-op server that measures its ceiling.

Every body is encoded to bytes before the clock starts; the timed part only writes them. The load runs in
`procs` child processes (spawned, so the parent's event loop and whatever else it runs, such as a webhook receiver
or a chat client, never competes with the client for the same interpreter), each with its share of the
connections and of the bodies. Children connect first, then all start together on one signal; the time of a run
is from the earliest start to the latest finish.

Clients (`client=`):
  raw      HTTP/1.1 keep-alive over asyncio streams, one request in flight per connection, the whole request
           (headers + body) pre-built as one bytes object. The default: the cheapest per request.
  aiohttp  aiohttp.ClientSession.post(data=<bytes>, Content-Type header): aiohttp's request machinery, no JSON work.
  legacy   aiohttp post(json=<object>): the JSON encoding of every body inside the timed part (the old client).

`null_server()` runs a server in its own process that answers every POST with 200 and does no work (`kind="raw"`:
an asyncio protocol; `kind="aiohttp"`: a trivial aiohttp app). Posting the same bodies to it gives the client's
ceiling on this machine (a lower bound: the no-op server's own cost is included). `kind="durable"` is the raw
server plus group commit and nothing else: each body is appended to a file and answered only after an fdatasync
that covers it. It is the ceiling of any server that is durable before its 2xx, with this client, disk and
number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

CLIENTS = ("raw", "aiohttp", "legacy")
_SPAWN = multiprocessing.get_context("spawn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encode(bodies: Sequence[object]) -> list[bytes]:
    """JSON-encode every body once (compact separators); bytes are kept as they are."""
    return [b if isinstance(b, bytes) else json.dumps(b, separators=(",", ":")).encode() for b in bodies]


@dataclass(frozen=True)
class Load:
    seconds: float  # earliest start to latest finish over all client processes
    requests: int
    retries: int  # 503 answers retried (only with retry_busy)
    client_cpu_s: float  # user + system CPU of the client processes during the timed part
    procs: int
    connections: int
    client: str
    started: float  # time.monotonic() of the earliest start (CLOCK_MONOTONIC: the same clock in every process)
    finished: float

    @property
    def client_cores(self) -> float:
        """How many cores the client kept busy on average: near `procs` means the client was the limit."""
        return self.client_cpu_s / self.seconds if self.seconds > 0 else 0.0


async def post_all(url: str, bodies: Sequence[object], *, connections: int = 4, procs: int = 1, client: str = "raw",
                   retry_busy: bool = False, content_type: str = "application/json", timeout: float = 900) -> Load:
    """POST every body to `url` once (2xx expected; 503 retried when `retry_busy`, anything else aborts)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}")
    encoded = encode(bodies)
    procs = max(1, min(procs, connections, len(encoded) or 1))
    start = _SPAWN.Event()
    children = []
    for p in range(procs):
        share = connections // procs + (1 if p < connections % procs else 0)
        parent_end, child_end = _SPAWN.Pipe()
        process = _SPAWN.Process(target=_client_main, daemon=True,
                                 args=(child_end, start, url, encoded[p::procs], share, client, retry_busy,
                                       content_type))
        process.start()
        child_end.close()
        children.append((process, parent_end))
    try:
        for _, pipe in children:
            message = await asyncio.to_thread(_receive, pipe, 60)
            if message != "ready":
                raise RuntimeError(f"load client failed to start: {message}")
        start.set()
        results = [await asyncio.to_thread(_receive, pipe, timeout) for _, pipe in children]
    finally:
        for process, pipe in children:
            pipe.close()
            if process.is_alive():
                process.terminate()
            process.join(5)
    for result in results:
        if not isinstance(result, dict):
            raise RuntimeError(f"load client failed: {result}")
    started, finished = min(r["start"] for r in results), max(r["end"] for r in results)
    return Load(seconds=finished - started, started=started, finished=finished,
                requests=sum(r["requests"] for r in results), retries=sum(r["retries"] for r in results),
                client_cpu_s=sum(r["cpu"] for r in results), procs=procs, connections=connections, client=client)


def _receive(pipe: Connection, timeout: float) -> object:
    if not pipe.poll(timeout):
        raise TimeoutError(f"load client silent for {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        return "the client process died"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_main(pipe: Connection, start: Any, url: str, bodies: list[bytes], connections: int, client: str,
                 retry_busy: bool, content_type: str) -> None:
    try:
        result = asyncio.run(_client(pipe, start, url, bodies, connections, client, retry_busy, content_type))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        result = f"{type(exc).__name__}: {exc}"
    pipe.send(result)


async def _client(pipe: Connection, start: Any, url: str, bodies: list[bytes], connections: int, client: str,
                  retry_busy: bool, content_type: str) -> dict[str, float]:
    queue = list(reversed(bodies))
    stats = {"requests": 0, "retries": 0}
    if client == "raw":
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        head = (f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nContent-Type: {content_type}\r\nContent-Length: ").encode()
        requests = [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
        queue = list(reversed(requests))
        streams = [await asyncio.open_connection(host, port) for _ in range(connections)]

        async def worker(n: int) -> None:
            reader, writer = streams[n]
            while queue:
                request = queue.pop()
                while True:
                    writer.write(request)
                    status, closing, retry_after = await _read_response(reader)
                    if closing:
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                        streams[n] = (reader, writer)
                    if 200 <= status < 300:
                        break
                    if status == 503 and retry_busy:
                        stats["retries"] += 1
                        await asyncio.sleep(retry_after)
                        continue
                    raise RuntimeError(f"{url}: HTTP {status}")
                stats["requests"] += 1

        pipe.send("ready")
        await asyncio.to_thread(start.wait)
        t0, cpu0 = time.monotonic(), _cpu()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        t1, cpu1 = time.monotonic(), _cpu()
        for _, writer in streams:
            writer.close()
    else:
        import aiohttp

        objects = [json.loads(b) for b in bodies] if client == "legacy" else None
        items: list[Any] = list(reversed(objects)) if objects is not None else queue
        headers = {"Content-Type": content_type}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            async def aio_worker() -> None:
                while items:
                    item = items.pop()
                    while True:
                        kwargs = {"json": item} if client == "legacy" else {"data": item, "headers": headers}
                        async with session.post(url, **kwargs) as response:
                            await response.read()
                            if 200 <= response.status < 300:
                                break
                            if response.status == 503 and retry_busy:
                                stats["retries"] += 1
                                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                                continue
                            raise RuntimeError(f"{url}: HTTP {response.status} {await response.text()}")
                    stats["requests"] += 1

            pipe.send("ready")
            await asyncio.to_thread(start.wait)
            t0, cpu0 = time.monotonic(), _cpu()
            await asyncio.gather(*(aio_worker() for _ in range(connections)))
            t1, cpu1 = time.monotonic(), _cpu()
    return {"start": t0, "end": t1, "cpu": cpu1 - cpu0, **stats}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, float]:
    """Read one HTTP/1.1 response; return (status, server closes the connection, Retry-After seconds)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(lower[at + 17:lower.index(b"\r\n", at + 2)])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    retry_after = 1.0
    at = lower.find(b"\r\nretry-after:")
    if at >= 0:
        with contextlib.suppress(ValueError):
            retry_after = float(lower[at + 14:lower.index(b"\r\n", at + 2)])
    return status, b"\r\nconnection: close" in lower, retry_after


# -- the no-op server -------------------------------------------------------------------------------------------


class _NullProtocol(asyncio.Protocol):
    """Answer every HTTP/1.1 request with `200 OK`, empty body; parses only what it needs to find the next one."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"

    def __init__(self, counter: list[int] | None = None, needle: bytes = b"") -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._counter = counter
        self._needle = needle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            lower = bytes(buffer[:end + 2]).lower()  # keep one CRLF so every header line ends with one
            at = lower.find(b"\r\ncontent-length:")
            length = int(lower[at + 17:lower.index(b"\r\n", at + 2)]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            if self._counter is not None:
                self._counter[0] += bytes(buffer[end + 4:end + 4 + length]).count(self._needle)
            del buffer[:end + 4 + length]
            answers += 1
        if answers and self._transport is not None:
            self._answer(answers, data)

    def _answer(self, answers: int, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(self.ANSWER * answers)


class _GroupSync:
    """Group commit and nothing else: bodies are appended to one file, and a request is answered only once an
    fdatasync that began after its body was written has returned. At most one fdatasync runs (on a thread); the
    requests that arrive meanwhile wait for the next one, together."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._waiting: list[tuple[asyncio.Transport, int]] = []
        self._syncing = False

    def add(self, transport: asyncio.Transport, answers: int, data: bytes) -> None:
        os.write(self._fd, data)
        self._waiting.append((transport, answers))
        if not self._syncing:
            self._start()

    def _start(self) -> None:
        self._syncing = True
        group, self._waiting = self._waiting, []
        future = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)
        future.add_done_callback(lambda _: self._done(group))

    def _done(self, group: list[tuple[asyncio.Transport, int]]) -> None:
        for transport, answers in group:
            transport.write(_NullProtocol.ANSWER * answers)
        self._syncing = False
        if self._waiting:
            self._start()


class _DurableNullProtocol(_NullProtocol):
    """The no-op server's parsing, with every answer held back until its bytes are on disk (see _GroupSync)."""

    def __init__(self, sync: _GroupSync) -> None:
        super().__init__()
        self._sync = sync

    def _answer(self, answers: int, data: bytes) -> None:
        assert self._transport is not None
        self._sync.add(self._transport, answers, data)


async def serve_null(port: int, counter: list[int] | None = None, needle: bytes = b"") -> asyncio.Server:
    """Start the raw no-op server in this event loop; with `counter`, count `needle` in every body received
    (a webhook receiver that counts alerts by their `"fingerprint":` keys, for instance)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _NullProtocol(counter, needle), "127.0.0.1", port, reuse_address=True)


def _null_main(port: int, kind: str, ready: Any, data_path: str) -> None:
    async def run() -> None:
        if kind == "raw":
            server = await serve_null(port)
        elif kind == "durable":
            sync = _GroupSync(data_path)
            server = await asyncio.get_running_loop().create_server(
                lambda: _DurableNullProtocol(sync), "127.0.0.1", port, reuse_address=True)
        else:
            from aiohttp import web

            async def ok(request: web.Request) -> web.Response:
                await request.read()
                return web.Response()

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", ok)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            server = None
        ready.set()
        await asyncio.Event().wait()
        del server

    asyncio.run(run())


@contextlib.asynccontextmanager
async def null_server(kind: str = "raw") -> AsyncIterator[str]:
    """A no-op HTTP server in its own process; yields its base URL."""
    port, ready = free_port(), _SPAWN.Event()
    folder = tempfile.mkdtemp(prefix="herald-null-")  # the temporary folder, where the benchmarks keep Herald's data
    process = _SPAWN.Process(target=_null_main, args=(port, kind, ready, os.path.join(folder, "data")), daemon=True)
    process.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the no-op server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join(5)
        shutil.rmtree(folder, ignore_errors=True)


async def client_ceiling(bodies: Sequence[object], *, connections: int = 4, procs: int = 1,
                         client: str = "raw", server: str = "raw") -> Load:
    """The client's rate posting `bodies` to a no-op server (`server`: a null_server kind) in another process."""
    async with null_server(server) as base:
        return await post_all(f"{base}/hooks/alertmanager", bodies, connections=connections, procs=procs,
                              client=client)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
