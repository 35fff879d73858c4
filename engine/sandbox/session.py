"""The sandbox's hold on Podman: one live connection, made again when the service dies, and the door to blocking code.

Every Podman call is synchronous (engine/sandbox/libpod.py, podman-py): `call` runs it on the session's own small
thread pool, so the event loop never blocks on Podman. `connection()` returns a live connection, reaching the
service first (and starting it, if allowed: engine/sandbox/host.py); `classify()` says what a failed call means and
drops a dead service's connection, so the next call reconnects. `problem` is why the sandbox cannot run scripts, as
of the last check (the runner sets it too, after its own checks).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engine.core.errors import SandboxError, SandboxUnavailable
from engine.sandbox.host import Connection, connect
from engine.sandbox.libpod import PodmanFailure
from engine.sandbox.podman_service import PodmanService
from engine.sandbox.policy import SandboxConfig

T = TypeVar("T")


class PodmanSession:
    """One sandbox's connection to its Podman service and its worker threads; `close()`d with the sandbox."""

    def __init__(self, config: SandboxConfig, *, parallel_runs: int) -> None:
        self._config = config
        self._parallel_runs = parallel_runs
        # Each run holds up to three pool threads (wait, attach reader, kill); two more for everything else.
        self.pool = ThreadPoolExecutor(max_workers=3 * parallel_runs + 2, thread_name_prefix="herald-sandbox")
        self._connect_lock = asyncio.Lock()
        self._service = PodmanService(idle_timeout_s=config.service_idle_s)
        self._conn: Connection | None = None
        self.problem: str | None = "not started"

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The one door to blocking code (podman-py, the service start): run it on our pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def connection(self) -> Connection:
        """A live connection: the current one, or a new one (starting the service if allowed); raises
        SandboxUnavailable, and keeps its message in `problem`, when the service cannot be reached."""
        async with self._connect_lock:
            if self._conn is not None and self._service.exited:
                # The service we started ended (normally: its idle timeout): connect again, which starts a new one.
                conn, self._conn = self._conn, None
                await self.call(conn.close)
            if self._conn is None:
                try:
                    self._conn = await self.call(self._connect)
                except SandboxUnavailable as exc:
                    self.problem = str(exc)
                    raise
                self.problem = None
            return self._conn

    def _connect(self) -> Connection:
        """Blocking: reach the service (maybe starting it), learn who it runs as, check the image."""
        return connect(self._config, self._service, parallel_runs=self._parallel_runs)

    async def classify(self, conn: Connection, exc: PodmanFailure) -> SandboxError:
        """What a failed Podman call means for the run; a dead service is dropped so the next run reconnects."""
        if exc.unreachable:
            if self._conn is conn:
                self._conn = None
                await self.call(conn.close)
            fix = "it is restarted on the next run" if self._config.autostart else "start it again"
            problem = f"the podman service at {conn.url} stopped answering ({exc.__cause__ or exc!r}): {fix}"
            self.problem = problem
            return SandboxUnavailable(problem)
        return SandboxError(f"podman failed during the run: {exc}")

    async def close(self) -> None:
        """Release podman-py's connections, stop the service if we started it, and release the worker threads."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.call(conn.close)
        await self.call(self._service.stop)
        self.pool.shutdown(wait=False, cancel_futures=True)
