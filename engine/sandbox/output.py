"""Capturing a sandboxed run's output: attach to the container before it starts, keep the head, count the rest.

Blocking helpers for the sandbox's worker threads (engine/sandbox/runner.py runs them through its thread pool).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from podman import PodmanClient
from podman.api import stream_frames

from engine.core.errors import SandboxError

log = logging.getLogger("engine.sandbox")

CONTROL_TIMEOUT_S = 30.0  # HTTP timeout of create/start/kill/remove/inspect
WAIT_SLACK_S = 30.0  # HTTP read timeout of wait/logs beyond the run's own timeout
_ATTACH_PATH = "/v4.0.0/libpod/containers/{id}/attach?stream=true&stdout=true&stderr=true&logs=false"


class OutputSink:
    """Keeps the first `limit` bytes of a run's output, counts all of it, and cuts the kept part into lines.

    Fed by one thread (the attach reader); `finish()` runs after that thread is done. Lines go to `emit`
    (which hands them to the event loop) as they complete, so a chat sees progress while the script runs.
    """

    def __init__(self, limit: int, emit: Callable[[str], None] | None) -> None:
        self._limit = limit
        self._emit = emit
        self._chunks: list[bytes] = []
        self._kept = 0
        self._line = b""
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
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
            (size,) = struct.unpack(">I", header[4:])
            while size:
                data = reader.read1(min(size, 65536))
                if not data:
                    return
                size -= len(data)
                sink.feed(data)
    except (OSError, ValueError) as exc:  # closed under us (a cancelled run), or a read timeout
        log.debug("attach stream ended: %r", exc)
    finally:
        reader.close()


def read_log(client: PodmanClient, ctr_id: str, limit: int) -> bytes:
    """Blocking: the output in Podman's log of the container, up to about `limit` bytes. For a service we cannot
    attach to (not a local socket), and for a run adopted after a restart (nobody was attached while it ran).

    conmon keeps at most log_size of it, so a larger output is counted only up to that.
    """
    resp = client.api.get(f"/containers/{ctr_id}/logs", params={"follow": False, "stdout": True, "stderr": True},
                          stream=True, timeout=CONTROL_TIMEOUT_S)
    try:
        resp.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        for frame in _frames(resp):
            chunks.append(frame)
            size += len(frame)
            if size > limit:
                break  # no need to read the rest
    finally:
        resp.close()
    return b"".join(chunks)


def _frames(resp: Any) -> Iterator[bytes]:
    """The payloads of a multiplexed log response (stdout and stderr frames, in log order)."""
    for frame in stream_frames(resp):
        if isinstance(frame, bytes):  # always, without demux; the check is for the type checker
            yield frame


def explain(text: str) -> str:
    if "slirp4netns" in text and "/dev/net/tun" in text:
        text += " (network default needs /dev/net/tun usable by the sandbox user: chmod 666 /dev/net/tun)"
    return text
