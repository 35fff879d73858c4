"""How observers (the TUI) talk to an engine: a small protocol and its WebSocket implementation (an in-memory one
for tests is engine/client/static.py).

The TUI imports only this module and `engine.snapshots`, so it holds plain snapshot records and never engine
objects. `RemoteEngineClient` speaks the `/api/v1/stream` protocol:

    server -> {"type": "snapshot", "snapshot": Snapshot}         first frame after every connect
    server -> {"type": "event" | "run" | "task" | "audit" | "rules" | "alert", "item": ...}   live updates
    client -> {"type": "command", "text": "/backup now", "id": "<client id>"}
    client -> {"type": "press", "button": "<a button id from an alert>", "id": "<client id>"}
    server -> {"type": "reply", "id": "<client id>", "text": "..."}

and reads the details the stream does not carry: `GET /api/v1/events/{id}` (an `EventTrace`) and
`GET /api/v1/tasks/{id}` (a `TaskDetail`). It pings every HEARTBEAT_S, so a silent engine is noticed within
seconds; a command or press the connection took but the engine never answered comes back as a `Reply` with
`error=True` when the connection drops, so nothing typed vanishes without a word.

Exceptions (all derive from `engine.errors.HeraldError`):

    EngineClientError        the client could not do what was asked
    ├── TokenMissing         `<data dir>/api-token` is missing or empty
    ├── AuthRejected         the engine answered 401/403: retrying cannot help
    └── NotConnected         send_command while no connection is open ("engine unreachable")
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError
from yarl import URL

from engine.client.snapshots import (
    AlertView,
    AuditView,
    EventTrace,
    EventView,
    RulesView,
    RunView,
    Snapshot,
    TaskDetail,
    TaskView,
)
from engine.core.errors import HeraldError
from engine.core.ids import new_id

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/stream"
TOKEN_FILE = "api-token"
UNANSWERED_KEPT = 100
HEARTBEAT_S = 3.0
"""Seconds between pings; a pong missing for half of that ends the connection. An engine that stopped answering
(stopped, hung, or behind a dead network) is seen within ~5 s instead of trusted for a minute."""


class Reply(BaseModel):
    """The engine's answer to one `send_command`, matched by the client-chosen `id`. `error` marks the client's own
    word that no answer will come (the connection dropped before the engine answered)."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    error: bool = False


Update = Snapshot | EventView | RunView | TaskView | AuditView | RulesView | AlertView | Reply

# Frame "type" -> record class, for the frames that carry one record under "item".
_ITEM_TYPES: dict[str, type[BaseModel]] = {
    "event": EventView,
    "run": RunView,
    "task": TaskView,
    "audit": AuditView,
    "rules": RulesView,
    "alert": AlertView,
}


class EngineClientError(HeraldError):
    """Root of the errors this module raises."""


class TokenMissing(EngineClientError):
    """The API token file is missing or empty."""


class AuthRejected(EngineClientError):
    """The engine refused the token; reconnecting with the same token would be refused again."""


class NotConnected(EngineClientError):
    """A command was sent while there was no open connection to the engine."""


class EngineClient(Protocol):
    """What the TUI needs from an engine, whether in-process, remote, or canned for tests."""

    status: str
    """Human-readable connection state: "connecting", "connected", "disconnected, retrying in <s>: <reason>",
    "failed: <reason>", "closed"."""

    def updates(self) -> AsyncIterator[Update]:
        """Yield a Snapshot after every (re)connect, then live items and replies; one consumer at a time."""
        ...

    async def send_command(self, text: str) -> None:
        """Run a chat-style command as the token's principal; the answer arrives as a `Reply` update."""
        ...

    async def press(self, button_id: str) -> None:
        """Press an alert's button (an id from an `AlertView`) as the token's principal; answered like a command."""
        ...

    async def event_trace(self, event_id: str) -> EventTrace:
        """An event's trace: the rules that ran on it (states, effects) and why each other rule did not match."""
        ...

    async def task_detail(self, task_id: str) -> TaskDetail:
        """A task with its whole output."""
        ...

    async def close(self) -> None:
        """Stop producing updates and release the connection; safe to call twice."""
        ...


def read_api_token(data_dir: Path) -> str:
    """Return the token the engine wrote to `<data_dir>/api-token`, so clients authenticate as it expects."""
    path = data_dir / TOKEN_FILE
    hint = f"no API token at {path}: is `herald run` running with --data {data_dir}?"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenMissing(hint) from None
    except OSError as exc:
        raise TokenMissing(f"cannot read the API token at {path}: {exc.strerror or exc}") from exc
    if not token:
        raise TokenMissing(
            f"the API token file {path} is empty: is `herald run` running with --data {data_dir}?"
        )
    return token


def parse_frame(data: str) -> Update | None:
    """Turn one server text frame into an update; None (and a warning) for frames this client does not know."""
    try:
        frame = json.loads(data)
        kind = frame["type"]
        if kind == "snapshot":
            return Snapshot.model_validate(frame["snapshot"])
        if kind == "reply":
            return Reply(id=frame["id"], text=frame["text"])
        if kind in _ITEM_TYPES:
            return _ITEM_TYPES[kind].model_validate(frame["item"])  # type: ignore[return-value]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        log.warning("ignoring a malformed frame from the engine: %s", exc)
        return None
    log.warning("ignoring a frame of unknown type %r from the engine", kind)
    return None


def backoff(
    *, initial: float = 0.5, factor: float = 2.0, cap: float = 30.0, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Yield reconnect delays that grow exponentially up to `cap`, with jitter so clients don't reconnect in step.

    Each delay is drawn uniformly from [base/2, base] ("equal jitter"): never zero, never above the cap.
    """
    base = initial
    while True:
        yield base / 2 + rng() * base / 2
        base = min(base * factor, cap)


def classify(exc: BaseException) -> Literal["retry", "fatal"]:
    """Decide whether reconnecting could help after `exc`: auth and addressing errors are fatal."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        # 401/403: bad token; 404: wrong URL or an engine without the stream API. 5xx may be a restart.
        return "retry" if exc.status >= 500 or exc.status in (408, 429) else "fatal"
    if isinstance(exc, aiohttp.InvalidURL):
        return "fatal"
    if isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError)):
        return "retry"
    return "fatal"


def stream_url(url: str) -> URL:
    """Accept the engine's base URL (http://127.0.0.1:8470) or the full stream URL, and return the stream URL."""
    parsed = URL(url)
    if parsed.path in ("", "/"):
        return parsed.with_path(STREAM_PATH)
    return parsed


class RemoteEngineClient:
    """An `EngineClient` over the engine's WebSocket stream that reconnects until closed or refused."""

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        delays: Callable[[], Iterator[float]] = backoff,
        connect_timeout: float = 10.0,
        heartbeat: float = HEARTBEAT_S,
    ) -> None:
        self.url = stream_url(url)
        self.status = "connecting"
        # A callable is asked again at every connect: the engine renews its local token, and a restarted engine
        # refuses the previous run's, so a long-lived client re-reads the token file rather than give up.
        self._token = token if callable(token) else (lambda: token)
        self._rereads = callable(token)
        self._refused: str | None = None  # the token last refused; a new one is worth a try
        self._delays = delays
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = asyncio.Event()
        # Commands and presses sent on the open connection that the engine has not answered yet: if it drops first,
        # the consumer is told each one got no answer, so nothing typed vanishes silently.
        self._unanswered: dict[str, str] = {}

    async def updates(self) -> AsyncIterator[Update]:
        """Connect, yield the snapshot and live updates, and reconnect after drops until `close()`.

        Raises AuthRejected (or another EngineClientError) when the engine refuses in a way retrying cannot fix.
        """
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            delays = self._delays()
            while not self._closed.is_set():
                self.status = "connecting"
                token = ""
                try:
                    token = self._token()
                    # The whole handshake is bounded: a stopped engine's kernel still accepts the TCP connection.
                    async with asyncio.timeout(self._connect_timeout):
                        opened = await session.ws_connect(
                            self.url, headers={"Authorization": f"Bearer {token}"}, heartbeat=self._heartbeat)
                    async with opened as ws:
                        self._ws = ws
                        self.status = "connected"
                        delays = self._delays()  # a good connection resets the backoff
                        async for update in self._receive(ws):
                            if isinstance(update, Reply):
                                self._unanswered.pop(update.id, None)
                            yield update
                        reason = _close_reason(ws)
                except (aiohttp.ClientError, OSError, TimeoutError, EngineClientError) as exc:
                    if self._rereads and _refused_token(exc) and token != self._refused:
                        self._refused = token  # perhaps renewed or restarted: read the token again, once
                        reason = _describe(exc)
                    elif isinstance(exc, EngineClientError):
                        self.status = f"failed: {exc}"
                        raise
                    elif classify(exc) == "fatal":
                        # The status line stays short; the raised error carries the full explanation.
                        self.status = f"failed: {_describe(exc)}"
                        raise _fatal_error(exc, self.url) from exc
                    reason = _describe(exc)
                finally:
                    self._ws = None
                if self._closed.is_set():
                    break
                delay = next(delays)
                self.status = f"disconnected, retrying in {delay:.1f}s: {reason}"
                log.info("engine stream %s: %s", self.url, self.status)
                for update in self._lost_answers():
                    yield update
                await self._sleep_unless_closed(delay)
        self.status = "closed"

    def _lost_answers(self) -> list[Reply]:
        """A Reply (error) for every command or press the dropped connection took without an answer."""
        lost = [Reply(id=frame_id, error=True, text=f"no answer to {what}: the connection to the engine dropped "
                      "before it answered; it may not have run (see the Audit tab once reconnected)")
                for frame_id, what in self._unanswered.items()]
        self._unanswered.clear()
        return lost

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[Update]:
        """Yield the updates in the text frames of one connection until it ends."""
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                update = parse_frame(msg.data)
                if update is not None:
                    yield update
            elif msg.type is aiohttp.WSMsgType.ERROR:
                break
            # BINARY frames are not part of the protocol; aiohttp answers pings itself.

    async def _sleep_unless_closed(self, delay: float) -> None:
        """Wait `delay` seconds, returning early if `close()` is called meanwhile."""
        try:
            async with asyncio.timeout(delay):  # not wait_for: on 3.11 it can swallow a cancellation
                await self._closed.wait()
        except TimeoutError:
            pass

    async def send_command(self, text: str) -> None:
        """Send a command frame on the open connection; its Reply comes back through `updates()`."""
        await self._send({"type": "command", "text": text, "id": new_id()}, text)

    async def press(self, button_id: str) -> None:
        """Send a press frame on the open connection; the engine's answer comes back through `updates()`."""
        await self._send({"type": "press", "button": button_id, "id": new_id()}, "the button press")

    async def _send(self, frame: dict[str, str], what: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise NotConnected(f"engine unreachable ({self.status})")
        self._unanswered[frame["id"]] = what
        if len(self._unanswered) > UNANSWERED_KEPT:  # an engine that never answers must not grow this for ever
            self._unanswered.pop(next(iter(self._unanswered)))
        try:
            await ws.send_json(frame)
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._unanswered.pop(frame["id"], None)
            raise NotConnected(f"engine unreachable: the connection dropped: {_describe(exc)}") from exc

    async def event_trace(self, event_id: str) -> EventTrace:
        return EventTrace.model_validate(await self._get(f"/api/v1/events/{event_id}"))

    async def task_detail(self, task_id: str) -> TaskDetail:
        return TaskDetail.model_validate(await self._get(f"/api/v1/tasks/{task_id}"))

    async def _get(self, path: str) -> object:
        """GET one of the engine's JSON resources with the token; EngineClientError says why it failed."""
        scheme = {"ws": "http", "wss": "https"}.get(self.url.scheme, self.url.scheme)
        url = self.url.with_scheme(scheme).with_path(path)
        timeout = aiohttp.ClientTimeout(total=self._connect_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, headers={"Authorization": f"Bearer {self._token()}"}) as response:
                    body = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise EngineClientError(f"engine unreachable: {_describe(exc)}") from exc
        if response.status != 200:
            reason = body.get("error") if isinstance(body, dict) else None
            raise EngineClientError(f"the engine answered {response.status}: {reason or 'no reason given'}")
        return body

    async def close(self) -> None:
        """Close the connection and stop reconnecting; `updates()` then ends."""
        self._closed.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()


def _refused_token(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status in (401, 403)


def _close_reason(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Say why a connection that was open ended."""
    exc = ws.exception()
    if exc is not None:
        return _describe(exc)
    return f"connection closed by the engine (code {ws.close_code})"


def _describe(exc: BaseException) -> str:
    """A short, single-line description of a connection problem."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status in (401, 403):
            return f"API token rejected (HTTP {exc.status})"
        return f"HTTP {exc.status}: {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection refused by {exc.host}:{exc.port}"
        return f"cannot reach {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _fatal_error(exc: BaseException, url: URL) -> EngineClientError:
    """Build the error that explains a non-retryable failure to the user."""
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status in (401, 403):
        return AuthRejected(
            f"the engine at {url} rejected the API token (HTTP {exc.status}): "
            "use the api-token from the data dir of the running `herald run`"
        )
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 404:
        return EngineClientError(f"no event stream at {url} (HTTP 404): is this a Herald engine URL?")
    return EngineClientError(f"cannot connect to the engine at {url}: {_describe(exc)}")
