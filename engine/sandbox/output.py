"""Capturing a sandboxed run's output: attach to the container before it starts, keep the head, count the rest.

Blocking helpers for the sandbox's worker threads (engine/sandbox/execution.py runs them on the
sandbox's thread pool).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
from collections.abc import Callable, Iterator

from engine.core.errors import SandboxError
from engine.sandbox.libpod import PREFIX, Libpod, container_path

log = logging.getLogger("engine.sandbox")

CONTROL_TIMEOUT_S = 30.0  # HTTP timeout of create/start/kill/remove/inspect
WAIT_SLACK_S = 30.0  # HTTP read timeout of wait/logs beyond the run's own timeout
_ATTACH_PATH = PREFIX + "/containers/{id}/attach?stream=true&stdout=true&stderr=true&logs=false"
STDOUT, STDERR = 1, 2  # the stream byte of a multiplexed frame's header
TAIL_BYTES = 4096  # kept of the end of each stream, past the output limit too (a task's stdout_tail, stderr_tail)


class OutputSink:
    """Keeps the first `limit` bytes of a run's output, counts all of it, and cuts the kept part into lines; keeps
    the last TAIL_BYTES of stdout and of stderr apart, for rules that ask for one of them.

    Fed by one thread (the attach reader); `finish()` runs after that thread is done. Lines go to `emit`
    (which hands them to the event loop) as they complete, so a chat sees progress while the script runs.
    """

    def __init__(self, limit: int, emit: Callable[[str], None] | None) -> None:
        self._limit = limit
        self._emit = emit
        self._chunks: list[bytes] = []
        self._kept = 0
        self._line = b""
        self._tails = {STDOUT: bytearray(), STDERR: bytearray()}
        self.total = 0

    def feed(self, data: bytes, stream: int = STDOUT) -> None:
        self.total += len(data)
        tail = self._tails.get(stream)
        if tail is not None:
            tail += data
            del tail[:-TAIL_BYTES]
        data = data[: self._limit - self._kept]
        if not data:
            return
        self._kept += len(data)
        self._chunks.append(data)
        if self._emit is not None:
            *lines, self._line = (self._line + data).split(b"\n")
            for line in lines:
                self._emit(line.decode(errors="replace"))

    @property
    def head(self) -> bytes:
        return b"".join(self._chunks)

    def tail(self, stream: int) -> str:
        """The end of what the script wrote to one stream (STDOUT or STDERR)."""
        return self._tails[stream].decode(errors="replace")

    @property
    def truncated(self) -> bool:
        return self.total > self._kept

    def truncation_note(self) -> str:
        return f"[herald: output truncated at {self._limit} bytes of {self.total}]"

    def finish(self) -> None:
        """Deliver the unterminated last line and, if output was cut, the truncation note."""
        if self._emit is None:
            return
        if self._line:
            self._emit(self._line.decode(errors="replace"))
            self._line = b""
        if self.truncated:
            self._emit(self.truncation_note())


def open_attach(url: str, ctr_id: str, timeout_s: float) -> socket.socket | None:
    """Blocking: attach to the created container's stdout and stderr; None if the service is not local.

    Attaching before start means nothing the script writes is missed: podman initialises the container
    (runc create, conmon, network) and connects to conmon's attach socket before it answers 101. podman-py
    has no attach, so this speaks the one HTTP exchange itself.
    """
    if not url.startswith("unix://"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONTROL_TIMEOUT_S)
        sock.connect(url.removeprefix("unix://"))
        sock.sendall(
            f"POST {_ATTACH_PATH.format(id=ctr_id)} HTTP/1.1\r\nHost: podman\r\nUpgrade: tcp\r\n"
            "Connection: Upgrade\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: whatever follows the headers is already the stream
            if not chunk or len(head) > 8192:
                raise SandboxError(f"podman closed the attach request: {head[:200]!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status and " 200 " not in status:
            # An error here is podman failing to initialise the container (e.g. its network): say why.
            sock.settimeout(2)
            try:
                body = sock.recv(4096).decode(errors="replace")
            except OSError:
                body = ""
            try:
                message = json.loads(body)["message"]
            except (ValueError, KeyError, TypeError):
                message = body.strip() or status
            raise SandboxError(f"podman could not start the container ({status}): {explain(message)}")
        sock.settimeout(timeout_s + WAIT_SLACK_S)
        return sock
    except OSError as exc:
        sock.close()
        raise SandboxError(f"could not attach to the container through {url}: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def pump(sock: socket.socket, sink: OutputSink) -> None:
    """Blocking, worker thread: feed the attach stream's frames to `sink` until the container closes it."""
    reader = sock.makefile("rb")
    try:
        while True:
            header = reader.read(8)
            if len(header) < 8:
                return
            stream, size = struct.unpack(">BxxxI", header)
            while size:
                data = reader.read1(min(size, 65536))
                if not data:
                    return
                size -= len(data)
                sink.feed(data, stream)
    except (OSError, ValueError) as exc:  # closed under us (a cancelled run), or a read timeout
        log.debug("attach stream ended: %r", exc)
    finally:
        reader.close()


def read_log(api: Libpod, ctr_id: str, limit: int) -> list[tuple[int, bytes]]:
    """Blocking: the output in Podman's log of the container, up to about `limit` bytes. For a service we cannot
    attach to (not a local socket), and for a run adopted after a restart (nobody was attached while it ran).

    conmon keeps at most log_size of it, so a larger output is counted only up to that.
    """
    resp = api.open("GET", container_path(ctr_id, "logs"), {"follow": "false", "stdout": "true", "stderr": "true"})
    try:
        frames: list[tuple[int, bytes]] = []
        size = 0
        for frame in _frames(resp):
            frames.append(frame)
            size += len(frame[1])
            if size > limit:
                break  # no need to read the rest
    finally:
        resp.close()
    return frames


def feed_log(sink: OutputSink, frames: list[tuple[int, bytes]]) -> None:
    for stream, data in frames:
        sink.feed(data, stream)


def _frames(resp: http.client.HTTPResponse) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) of each frame of a multiplexed log response (stdout and stderr, in log order)."""
    while True:
        header = resp.read(8)
        if len(header) < 8:
            return
        stream, size = struct.unpack_from(">BxxxL", header)
        data = resp.read(size) if size else b""
        if len(data) < size:
            return
        yield stream, data


def explain(text: str) -> str:
    if "slirp4netns" in text and "/dev/net/tun" in text:
        text += " (network default needs /dev/net/tun usable by the sandbox user: chmod 666 /dev/net/tun)"
    return text
