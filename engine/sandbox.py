"""Run an operator's shell script in a locked-down, throw-away rootless Podman container.

Each run gets a fresh container from a tiny busybox image: no network, no capabilities, a read-only
root, a small noexec /tmp, the scripts folder mounted read-only, rlimits, and a wall-clock timeout
that SIGKILLs it. The container runs under an unprivileged host user (`sandboxer`), so even an
escape lands in an account that owns nothing.

podman-py is synchronous. Every call into it goes through `Sandbox._call`, which runs it on the
sandbox's own small thread pool; the event loop never blocks on Podman.

Errors: `SandboxUnavailable` (Podman, its service, the user, the image or the scripts folder is
missing; the message says how to fix it), `SandboxError` (Podman did not apply a protection, or
failed mid-run), `ValueError` (bad script name or arguments, from the caller).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import pwd
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from podman import PodmanClient
from podman.api import stream_frames
from podman.domain.containers import Container
from podman.errors import APIError, NotFound

from engine.errors import SandboxError, SandboxUnavailable
from engine.podman_service import SETUP_HINT, PodmanService, ping, socket_url_for
from engine.sandbox_policy import (
    DEFAULT_IMAGE,
    NOBODY,
    SandboxConfig,
    access_problem,
    build_spec,
    check_args,
    resolve_script,
    verify_applied,
)

__all__ = ["DEFAULT_IMAGE", "Sandbox", "SandboxConfig", "SandboxResult"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each run holds up to three pool threads (wait, live log, kill); the semaphore keeps the pool from
# starving. Rootless nproc counts all of the sandbox user's tasks anyway, so more would not help.
_MAX_PARALLEL_RUNS = 8
_CONTROL_TIMEOUT_S = 30.0  # HTTP timeout of create/start/kill/remove/inspect
_WAIT_SLACK_S = 30.0  # HTTP read timeout of wait/logs beyond the run's own timeout


@dataclass(frozen=True)
class SandboxResult:
    """What one run did. `exit_code` is None when the run timed out and was killed."""

    exit_code: int | None
    output: str  # stdout and stderr interleaved, capped at output_limit_bytes (+ a truncation note)
    timed_out: bool
    duration_s: float  # container start to exit
    enforced: tuple[str, ...]  # protections read back from the created container, not just requested


@dataclass(frozen=True)
class _Connection:
    """A live client plus what the service told us about itself."""

    client: PodmanClient
    url: str
    rootless: bool
    seccomp: bool
    uid: int  # host uid the script's files are read as
    gid: int
    who: str  # whose rights the scripts are read with, for messages: "sandboxer (uid 1001)"
    store: str  # whose image store the image must be in, for messages


def _is_connection_error(exc: BaseException) -> bool:
    # podman-py wraps every OSError (requests' included) in APIError; the cause tells a dead service apart.
    cause = exc.__cause__ if isinstance(exc, APIError) else exc
    return isinstance(cause, (requests.ConnectionError, ConnectionError, FileNotFoundError))


class _LiveOutput:
    """Cuts the follow-log byte stream into lines for `on_output`: each line once, in order, capped.

    Fed from the log-follow thread while the script runs; `finish()` then delivers whatever that
    stream had not reached yet from the final log, so nothing is lost or repeated.
    """

    def __init__(self, limit: int, emit: Callable[[str], None]) -> None:
        self._limit = limit
        self._emit = emit
        self._lock = threading.Lock()
        self._buf = b""
        self._taken = 0  # bytes of the log consumed so far
        self._done = False

    def feed(self, data: bytes) -> bool:
        """Take a chunk of the live stream; False once the caller should stop reading."""
        with self._lock:
            if self._done:
                return False
            self._take(data)
            return self._taken < self._limit

    def finish(self, final_log: bytes, truncated: bool) -> None:
        """Deliver the rest from the complete log, the unterminated last line, and a truncation note."""
        with self._lock:
            self._done = True
            self._take(final_log[self._taken:])
            if self._buf:
                self._emit(self._buf.decode(errors="replace"))
                self._buf = b""
            if truncated:
                self._emit(f"[herald: output truncated at {self._limit} bytes]")

    def _take(self, data: bytes) -> None:
        data = data[: max(0, self._limit - self._taken)]
        self._taken += len(data)
        *lines, self._buf = (self._buf + data).split(b"\n")
        for line in lines:
            self._emit(line.decode(errors="replace"))


# --- the runner --------------------------------------------------------------------------------------


class Sandbox:
    """Runs scripts from one folder in throw-away containers; one per engine, `start()`ed and `close()`d."""

    def __init__(self, *, config: SandboxConfig, scripts_dir: Path) -> None:
        self._config = config
        self._scripts_dir = Path(scripts_dir).absolute()
        self._pool = ThreadPoolExecutor(max_workers=3 * _MAX_PARALLEL_RUNS + 2,
                                        thread_name_prefix="herald-sandbox")
        self._slots = asyncio.Semaphore(_MAX_PARALLEL_RUNS)
        self._connect_lock = asyncio.Lock()
        self._service = PodmanService()
        self._conn: _Connection | None = None
        self._problem: str | None = "not started"
        self._followers: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def problem(self) -> str | None:
        """Why the sandbox cannot run scripts (with the fix), as of the last check; None when it can."""
        return self._problem

    async def start(self) -> None:
        """Connect (starting the Podman service if allowed) and check the host; never raises.

        Herald must come up even when Podman is missing or broken: the problem is logged, kept in
        `problem`, and raised by `run()`, which checks again each time.
        """
        try:
            conn = await self._ensure_connected()
            folder = self._scripts_folder()
            self._problem = access_problem(folder, None, conn.uid, conn.gid, conn.who)
        except SandboxUnavailable as exc:
            self._problem = str(exc)
        except Exception as exc:  # never let a broken host stop herald from starting
            log.exception("sandbox start-up check failed")
            self._problem = f"sandbox check failed unexpectedly: {exc!r}"
        if self._problem:
            log.warning("sandbox unavailable: %s", self._problem)

    async def run(
        self,
        script: str,
        args: Sequence[str],
        *,
        timeout_s: float,
        task_id: str,
        on_output: Callable[[str], None] | None = None,
    ) -> SandboxResult:
        """Run `script` from the scripts folder with `args` as literal argv entries.

        `on_output` gets each output line (no trailing newline) as it is printed, on the event loop
        thread, and every line has been delivered when this returns. The output it sees and the
        result's `output` are capped alike.
        """
        if self._closed:
            raise SandboxError("the sandbox is closed")
        argv_args = check_args(args)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if not isinstance(task_id, str) or "\x00" in task_id:
            raise ValueError(f"task_id must be a str without NUL bytes, got {task_id!r}")
        folder = self._scripts_folder()
        script_rel = resolve_script(folder, script)
        argv = ["/bin/sh", f"/scripts/{script_rel}", *argv_args]
        async with self._slots:
            conn, ctr, enforced = await self._create(folder, script_rel, argv, timeout_s, task_id)
            exited = False
            try:
                result = await self._execute(conn, ctr, enforced, timeout_s, on_output)
                exited = True
                return result
            except APIError as exc:
                raise await self._classify(conn, exc) from exc
            finally:
                # Shielded: a cancelled run must still not leave its container behind; the pool
                # thread finishes the removal even if nobody awaits it any more.
                await asyncio.shield(self._call(self._discard, ctr, not exited))

    async def close(self) -> None:
        """Stop the Podman service if we started it and release the worker threads.

        Cancel or finish the runs first: a run still going when the pool shuts down cannot remove its
        container any more.
        """
        if self._closed:
            return
        self._closed = True
        if self._followers:
            await asyncio.wait(self._followers, timeout=5)
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._call(conn.client.close)
        await self._call(self._service.stop)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- internals --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The one door to blocking code (podman-py, the service start): run it on our pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _scripts_folder(self) -> Path:
        folder = self._scripts_dir.resolve()
        if not folder.is_dir():
            raise SandboxUnavailable(f"the scripts folder {folder} does not exist: create it (mode 755)")
        return folder

    async def _ensure_connected(self) -> _Connection:
        async with self._connect_lock:
            if self._conn is None:
                try:
                    self._conn = await self._call(self._connect)
                except SandboxUnavailable as exc:
                    self._problem = str(exc)
                    raise
                self._problem = None
            return self._conn

    def _connect(self) -> _Connection:
        """Blocking: reach the service (maybe starting it), learn who it runs as, check the image."""
        cfg = self._config
        url = cfg.podman_url or socket_url_for(cfg.user)
        if cfg.autostart:
            url = self._service.start(cfg.user, url)
        elif not ping(url):
            raise SandboxUnavailable(
                f"no podman service answers at {url}: start it (`podman system service --time=0 {url}` "
                f"as {cfg.user or 'the current user'}) or set autostart = true"
            )
        client = PodmanClient(base_url=url, timeout=_CONTROL_TIMEOUT_S)
        try:
            host = client.info()["host"]
            rootless = bool(host["security"]["rootless"])
            if rootless:
                # Container root is this host uid; the scripts are read with its rights.
                uid = _host_id(host["idMappings"]["uidmap"])
                gid = _host_id(host["idMappings"]["gidmap"])
            else:
                uid = gid = NOBODY
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = "?"
            who = f"{name} (uid {uid})"
            store = who if rootless else "root (rootful podman)"
            if not client.images.exists(cfg.image):
                raise SandboxUnavailable(_image_missing(cfg.image, store))
        except SandboxUnavailable:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise SandboxUnavailable(f"the podman service at {url} answers but misbehaves: {exc}") from exc
        log.info("sandbox ready: %s, %s, image %s", url, "rootless" if rootless else "rootful", cfg.image)
        seccomp = bool(host["security"].get("seccompEnabled"))
        return _Connection(client, url, rootless, seccomp, uid, gid, who, store)

    async def _classify(self, conn: _Connection, exc: APIError) -> SandboxError:
        """Turn a podman-py error into ours; a dead service is dropped so the next run reconnects."""
        if _is_connection_error(exc):
            if self._conn is conn:
                self._conn = None
                await self._call(conn.client.close)
            fix = "it is restarted on the next run" if self._config.autostart else "start it again"
            problem = f"the podman service at {conn.url} stopped answering ({exc.__cause__!r}): {fix}"
            self._problem = problem
            return SandboxUnavailable(problem)
        return SandboxError(f"podman failed during the run: {exc}")

    async def _create(
        self, folder: Path, script_rel: str, argv: list[str], timeout_s: float, task_id: str
    ) -> tuple[_Connection, Container, tuple[str, ...]]:
        """Create the run's container on a live connection; reconnect once if the service had died."""
        for attempt in (1, 2):
            conn = await self._ensure_connected()
            problem = access_problem(folder, script_rel, conn.uid, conn.gid, conn.who)
            if problem:
                self._problem = problem
                raise SandboxUnavailable(problem)
            spec = build_spec(config=self._config, argv=argv, scripts_src=str(folder),
                               timeout_s=timeout_s, task_id=task_id, rootless=conn.rootless)
            try:
                ctr, enforced = await self._call(self._create_blocking, conn, spec)
                return conn, ctr, enforced
            except APIError as exc:
                error = await self._classify(conn, exc)
                # Nothing was created yet, so trying again on a fresh connection is safe.
                if attempt == 1 and isinstance(error, SandboxUnavailable) and self._config.autostart:
                    log.warning("%s; reconnecting", error)
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    def _create_blocking(self, conn: _Connection, spec: dict[str, Any]) -> tuple[Container, tuple[str, ...]]:
        """Blocking: create the container and verify what podman really applied."""
        try:
            resp = conn.client.api.post("/containers/create", data=json.dumps(spec),
                                        headers={"content-type": "application/json"})
            resp.raise_for_status()
            ctr = conn.client.containers.get(resp.json()["Id"])
        except APIError as exc:
            # Re-checked on every run: removing the image later gives the same clear message.
            if not _is_connection_error(exc) and "image not known" in str(exc).lower():
                raise SandboxUnavailable(_image_missing(spec["image"], conn.store)) from exc
            raise
        try:
            return ctr, verify_applied(ctr.attrs, spec, rootless=conn.rootless, who=conn.who, seccomp=conn.seccomp)
        except BaseException:
            self._discard(ctr, False)
            raise

    async def _execute(
        self,
        conn: _Connection,
        ctr: Container,
        enforced: tuple[str, ...],
        timeout_s: float,
        on_output: Callable[[str], None] | None,
    ) -> SandboxResult:
        loop = asyncio.get_running_loop()
        live: _LiveOutput | None = None
        if on_output is not None:
            callback = on_output

            def emit(line: str) -> None:  # called from the follow thread, and from finish() here
                loop.call_soon_threadsafe(_deliver, callback, line)

            live = _LiveOutput(self._config.output_limit_bytes, emit)
        started = time.perf_counter()
        await self._call(ctr.start)
        if live is not None:
            follower = loop.run_in_executor(self._pool, self._follow, conn, ctr.id, live, timeout_s)
            # Not awaited here (its stream ends ~250 ms after exit); close() waits for stragglers.
            self._followers.add(follower)
            follower.add_done_callback(self._followers.discard)
        waiter = loop.run_in_executor(
            self._pool,
            # interval: podman polls the state at this rate; its 250 ms default is most of a short run.
            functools.partial(ctr.wait, condition="exited", interval="10ms",
                              timeout=timeout_s + _WAIT_SLACK_S),
        )
        # If this run is cancelled, nobody awaits the waiter; its late error must not be logged as lost.
        waiter.add_done_callback(_consume_result)
        done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
        timed_out = False
        if not done:
            timed_out = await self._call(_kill, ctr)
        exit_code: int | None = int(await waiter)
        duration = time.perf_counter() - started
        raw, truncated = await self._call(self._read_log, conn, ctr.id)
        if live is not None:
            live.finish(raw, truncated)
            # call_soon_threadsafe keeps FIFO order: once this sentinel runs, every line has been delivered.
            flushed = loop.create_future()
            loop.call_soon_threadsafe(flushed.set_result, None)
            await flushed
        output = raw.decode(errors="replace")
        if truncated:
            output += f"\n[herald: output truncated at {self._config.output_limit_bytes} bytes]"
        return SandboxResult(
            exit_code=None if timed_out else exit_code,
            output=output,
            timed_out=timed_out,
            duration_s=duration,
            enforced=enforced,
        )

    def _follow(self, conn: _Connection, ctr_id: str, live: _LiveOutput, timeout_s: float) -> None:
        """Blocking, worker thread: feed the live log stream to `live` until it ends or is not wanted."""
        resp = None
        try:
            resp = conn.client.api.get(f"/containers/{ctr_id}/logs",
                                       params={"follow": True, "stdout": True, "stderr": True},
                                       stream=True, timeout=timeout_s + _WAIT_SLACK_S)
            resp.raise_for_status()
            for frame in _frames(resp):
                if not live.feed(frame):
                    break
        except Exception as exc:  # the final log is authoritative; losing the live view is not an error
            log.debug("live log of %s ended: %r", ctr_id[:12], exc)
        finally:
            if resp is not None:
                resp.close()

    def _read_log(self, conn: _Connection, ctr_id: str) -> tuple[bytes, bool]:
        """Blocking: the complete log after exit, at most output_limit_bytes of it, and whether it was cut."""
        limit = self._config.output_limit_bytes
        resp = conn.client.api.get(f"/containers/{ctr_id}/logs",
                                   params={"follow": False, "stdout": True, "stderr": True},
                                   stream=True, timeout=_CONTROL_TIMEOUT_S)
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
        raw = b"".join(chunks)
        return raw[:limit], size > limit

    def _discard(self, ctr: Container, may_run: bool) -> None:
        """Blocking: remove the container; SIGKILL first if it may still run (sh ignores SIGTERM)."""
        if may_run:
            _kill(ctr)
        try:
            ctr.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            log.warning("could not remove sandbox container %s: %s", ctr.id[:12], exc)


def _kill(ctr: Container) -> bool:
    """SIGKILL the container; False if it had already exited."""
    try:
        ctr.kill(signal="SIGKILL")
        return True
    except APIError:  # 409 "not running" (or gone): it beat the timeout
        return False


def _frames(resp: Any) -> Iterator[bytes]:
    """The payloads of a multiplexed log response (stdout and stderr frames, in log order)."""
    for frame in stream_frames(resp):
        if isinstance(frame, bytes):  # always, without demux; the check is for the type checker
            yield frame


def _consume_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _deliver(on_output: Callable[[str], None], line: str) -> None:
    try:
        on_output(line)
    except Exception:  # a broken listener must not break the run
        log.exception("on_output callback failed")


def _host_id(mapping: list[dict[str, int]]) -> int:
    return next(m["host_id"] for m in mapping if m["container_id"] == 0)


def _image_missing(image: str, who: str) -> str:
    if image == DEFAULT_IMAGE:
        fix = SETUP_HINT
    else:
        fix = f"build or pull it as that user (.ci/setup-sandbox builds only {DEFAULT_IMAGE})"
    return f"the image {image} is missing from the podman store of {who}: {fix}"
