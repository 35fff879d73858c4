"""The few calls to Podman's REST API that every engine makes at start, over the standard library.

Reaching the service, `podman info`, the image check, listing and removing containers a crash left behind, and
reading a container's log need five endpoints. podman-py (with requests, about 9 MiB resident) is what runs
containers (engine/sandbox/container.py); it is imported with the first run, so an engine whose rules have run no
script yet stays that much smaller (issue 13 measures the engine's memory with 10,000 chat sessions).

Blocking; engine/sandbox/runner.py calls it from its worker threads.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from engine.core.errors import SandboxError, SandboxUnavailable

PREFIX = "/v4.0.0/libpod"  # the libpod API of Podman 4 and 5 (Debian 12 ships 4.3)


class PodmanFailure(SandboxError):
    """A call to Podman failed: `status` is the HTTP status Podman answered with (404: no such container or image,
    409: not running), or None when the service did not answer at all. engine/sandbox/container.py raises it for
    podman-py's errors too, so the runner tells them apart in one way."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("podman", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Libpod:
    """One Podman service, at `unix:///path/podman.sock` or `tcp://host:port`. A connection per call: these calls are
    rare, and a service restarted meanwhile is simply reached again."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self._timeout = timeout_s
        parts = urlsplit(url)
        if parts.scheme not in ("unix", "tcp", "http"):
            raise SandboxUnavailable(f"podman_url {url!r}: use unix:///path/to/podman.sock or tcp://host:port")
        self._parts = parts

    def json(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded answer of `method path` (None for an empty one)."""
        with self.open(method, path, params) as response:
            body = response.read()
        return json.loads(body) if body.strip() else None

    def open(self, method: str, path: str, params: dict[str, Any] | None = None,
             timeout_s: float | None = None) -> http.client.HTTPResponse:
        """The response of `method path`, to be read and closed by the caller."""
        connection = self._connection(timeout_s or self._timeout)
        query = f"?{urlencode(params)}" if params else ""
        try:
            connection.request(method, f"{PREFIX}{path}{query}", headers={"Connection": "close"})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise PodmanFailure(f"no answer from the podman service at {self.url}: {exc!r}", None) from exc
        finally:
            connection.close()  # the response keeps the socket open until it is closed itself
        if response.status >= 400:
            with response:
                body = response.read()
            raise PodmanFailure(_message(body) or f"{method} {path}: HTTP {response.status}", response.status)
        return response

    def ping(self) -> bool:
        """True if a Podman service answers."""
        try:
            response = self.open("GET", "/_ping")
        except PodmanFailure:
            return False
        response.close()
        return True

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._parts.scheme == "unix":
            return _UnixConnection(self._parts.path, timeout)
        return http.client.HTTPConnection(self._parts.hostname or "localhost", self._parts.port or 80,
                                          timeout=timeout)


def container_path(container_id: str, action: str = "") -> str:
    return f"/containers/{quote(container_id, safe='')}{'/' + action if action else ''}"


def _message(body: bytes) -> str:
    """Podman's error bodies are {"cause": ..., "message": ..., "response": status}."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:300]
    return str(answer.get("message") or answer.get("cause") or "") if isinstance(answer, dict) else str(answer)
