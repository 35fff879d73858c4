"""Run an operator's shell script in a locked-down, throw-away rootless Podman container.

Each run gets a fresh container from a tiny busybox image: no network (unless the run opts in, and then
through a packet filter set in its own namespace before the script starts: engine/sandbox/netfilter.py), no
capabilities, a read-only root, a small noexec /tmp, the scripts folder mounted read-only, memory, pids
and CPU limits (cgroups where the host allows them, rlimits that add up to the run's memory otherwise: see
`plan_limits` and engine/sandbox/budget.py), and a wall-clock timeout that SIGKILLs it. The container runs
under an unprivileged host user (`sandboxer`), and within it as a uid of its own (from that user's
subordinate range), so even an escape lands in an account that owns nothing, and a fork bomb counts against
its run only.

This module checks a run, creates its container and keeps track of it until it is removed; starting it and seeing
it to its end (live output, the timeout's SIGKILL, the result) is engine/sandbox/execution.py.

Podman is reached in two ways, both synchronous: engine/sandbox/libpod.py for what every engine does at start
(the service, its host, the image, leftovers), and podman-py, imported with the first run, for the run itself
(engine/sandbox/container.py). Every call goes through `PodmanSession.call` (engine/sandbox/session.py, which also
keeps the connection live), on the sandbox's own small thread pool; the event loop never blocks on Podman.

Crash recovery (engine/sandbox/leftovers.py): a caller that must not run a script twice passes `on_started`, which
records the container durably before it starts, and `keep=True`, which leaves the exited container in place until
`remove()` (once the result is stored). After a crash, `leftovers()` lists this owner's containers, `adopt()` waits
for one whose script started and reads its result, and `remove_leftovers()` removes the rest.

Errors: `SandboxUnavailable` (Podman, its service, the user, the image or the scripts folder is
missing; the message says how to fix it), `SandboxError` (Podman did not apply a protection, or
failed mid-run), `ValueError` (bad script name or arguments, from the caller).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.errors import SandboxError, SandboxUnavailable
from engine.sandbox import leftovers, netfilter, resolve
from engine.sandbox.execution import SandboxResult, await_adopted, execute
from engine.sandbox.host import Connection
from engine.sandbox.leftovers import Leftover
from engine.sandbox.libpod import PodmanFailure
from engine.sandbox.policy import (
    DEFAULT_IMAGE,
    HostLimits,
    LimitPlan,
    RunLimits,
    SandboxConfig,
    access_problem,
    build_spec,
    check_args,
    plan_limits,
    resolve_script,
)
from engine.sandbox.session import PodmanSession

if TYPE_CHECKING:
    from engine.sandbox.container import Container

__all__ = ["DEFAULT_IMAGE", "Leftover", "RunStart", "Sandbox", "SandboxConfig", "SandboxResult"]

log = logging.getLogger(__name__)

# Each run holds up to three pool threads (wait, attach reader, kill); the semaphore keeps the session's pool from
# starving. Two cores gain nothing from more containers starting at once.
_MAX_PARALLEL_RUNS = 8


@dataclass(frozen=True)
class RunStart:
    """What `on_started` learns: the container that is about to start, and what it enforces."""

    container_id: str
    enforced: tuple[str, ...]
    not_enforced: tuple[str, ...]
    limits_note: str


# --- the runner --------------------------------------------------------------------------------------


class Sandbox:
    """Runs scripts from one folder in throw-away containers; one per engine, `start()`ed and `close()`d."""

    def __init__(self, *, config: SandboxConfig, scripts_dir: Path, owner: str | None = None) -> None:
        self._config = config
        # Labels this process's containers, so the next start can adopt or remove what a crash left behind: a
        # container created but never started keeps a runc process of the sandbox user alive, and those add up
        # against the user's process limit until no new run can start.
        self._owner = owner
        self._mine: set[str] = set()  # containers this process created or adopted and has not removed yet
        self._kept: dict[str, int | None] = {}  # kept or adopted container -> its run uid, held until `remove()`
        self._scripts_dir = Path(scripts_dir).absolute()
        self._podman = PodmanSession(config, parallel_runs=_MAX_PARALLEL_RUNS)
        self._slots = asyncio.Semaphore(_MAX_PARALLEL_RUNS)
        self._uids_in_use: set[int] = set()
        self._closed = False

    @property
    def owner(self) -> str | None:
        """The `herald.owner` label of this process's containers (None: unlabelled, no crash recovery)."""
        return self._owner

    @property
    def problem(self) -> str | None:
        """Why the sandbox cannot run scripts (with the fix), as of the last check; None when it can."""
        return self._podman.problem

    async def start(self) -> None:
        """Connect (starting the Podman service if allowed) and check the host; never raises.

        Herald must come up even when Podman is missing or broken: the problem is logged, kept in
        `problem`, and raised by `run()`, which checks again each time.
        """
        try:
            conn = await self._podman.connection()
            folder = self._scripts_folder()
            first = conn.run_uids[0] if conn.run_uids else None
            self._podman.problem = access_problem(folder, None, *conn.reader(first))
        except SandboxUnavailable as exc:
            self._podman.problem = str(exc)
        except Exception as exc:  # never let a broken host stop herald from starting
            log.exception("sandbox start-up check failed")
            self._podman.problem = f"sandbox check failed unexpectedly: {exc!r}"
        if self._podman.problem:
            log.warning("sandbox unavailable: %s", self._podman.problem)

    async def leftovers(self) -> list[Leftover]:
        """This owner's containers that this process did not make: left by an earlier one (a crash, a stop).

        Raises SandboxUnavailable when Podman cannot be asked; [] without an owner.
        """
        if not self._owner:
            return []
        conn = await self._podman.connection()
        try:
            found = await self._podman.call(leftovers.find, conn.api, self._owner)
        except PodmanFailure as exc:
            raise await self._podman.classify(conn, exc) from exc
        return [left for left in found if left.container_id not in self._mine]

    async def containers_of_task(self, task_id: str) -> list[Leftover]:
        """The containers of one task on this machine, whoever made them (a worker that died mid-task); raises
        SandboxUnavailable when Podman cannot be asked."""
        conn = await self._podman.connection()
        try:
            return await self._podman.call(leftovers.find_task, conn.api, task_id)
        except PodmanFailure as exc:
            raise await self._podman.classify(conn, exc) from exc

    async def remove_leftovers(self, found: Iterable[Leftover] | None = None, *, keep_started: bool = False) -> int:
        """Remove leftovers (by default all of `leftovers()`; with `keep_started`, only those that never started),
        killing any still running; never raises. Returns how many were removed."""
        try:
            found = [left for left in (await self.leftovers() if found is None else found)
                     if not (keep_started and left.started)]
            conn = await self._podman.connection() if found else None
        except SandboxError as exc:
            log.warning("could not look for containers left behind by an earlier run: %s", exc)
            return 0
        removed = 0
        for left in found:
            assert conn is not None
            try:
                if await self._podman.call(leftovers.remove, conn.api, left.container_id):
                    removed += 1
                    log.warning("removed container %s, left behind by an earlier run of this %s", left.describe(),
                                "worker" if (self._owner or "").startswith("worker-") else "engine")
            except PodmanFailure as exc:
                log.warning("could not remove leftover container %s: %s", left.describe(), exc)
        return removed

    async def adopt(self, left: Leftover, *, timeout_s: float) -> SandboxResult:
        """Take over a run an earlier process started (`left.started`): wait for it to exit, SIGKILL it `timeout_s`
        after it started, then read its exit code and its output from Podman's log of it (at most `log_size_max` of
        it; lines are not streamed). The container stays until `remove()`, like after a run with keep=True.
        `enforced` is empty: the record of the run that created the container has it."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if left.started_at is None:
            raise ValueError(f"container {left.describe()} never started: there is nothing to adopt")
        from engine.sandbox import container  # podman-py, loaded with the first run or adoption

        async with self._slots:
            conn = await self._podman.connection()
            self._mine.add(left.container_id)
            if left.run_uid is not None:
                self._uids_in_use.add(left.run_uid)
            done = False
            try:
                ctr = await self._podman.call(container.get, conn, left.container_id)
                result = await await_adopted(conn, ctr, started_at=left.started_at, timeout_s=timeout_s,
                                             output_limit=self._config.output_limit_bytes, podman=self._podman)
                done = True
                return result
            except PodmanFailure as exc:
                raise await self._podman.classify(conn, exc) from exc
            finally:
                if done:
                    self._kept[left.container_id] = left.run_uid
                else:  # failed or cancelled: like a run's container, it must not stay
                    await asyncio.shield(self._podman.call(self._remove_quietly, conn, left.container_id))
                    self._release(left.container_id, left.run_uid)

    async def remove(self, container_id: str) -> None:
        """Remove a container kept after its run (keep=True) or adopted, once its result is stored; never raises."""
        run_uid = self._kept.pop(container_id, None)
        try:
            conn = await self._podman.connection()
            await self._podman.call(self._remove_quietly, conn, container_id)
        except SandboxError as exc:
            log.warning("could not remove sandbox container %s: %s", container_id[:12], exc)
        finally:
            self._release(container_id, run_uid)

    async def host_limits(self) -> tuple[HostLimits, LimitPlan]:
        """What this host lets Podman limit, and how a run with the configured defaults is limited on it."""
        conn = await self._podman.connection()
        limits = RunLimits.for_run(self._config, timeout_s=self._config.default_timeout_s, memory=None, network=None)
        return conn.host, plan_limits(limits, conn.host)

    async def run(
        self,
        script: str,
        args: Sequence[str],
        *,
        timeout_s: float,
        task_id: str,
        on_output: Callable[[str], None] | None = None,
        memory: str | int | None = None,
        network: str | None = None,
        network_allow: Sequence[str] = (),
        attempt: int = 1,
        on_started: Callable[[RunStart], Awaitable[None]] | None = None,
        keep: bool = False,
    ) -> SandboxResult:
        """Run `script` from the scripts folder with `args` as literal argv entries.

        `on_output` gets each output line (no trailing newline) as it is printed, on the event loop
        thread, and every line has been delivered when this returns. The output it sees and the
        result's `output` are capped alike; `output_bytes` counts everything printed.

        `memory` (bytes, or a size such as "512m"; default `[sandbox] memory`) and `network` apply to this run
        only. `network` is "none" (the default), "default" (the rootless user-mode network, slirp4netns, with the
        host's own addresses blocked) or "allow" (only the "HOST:PORT" entries of `network_allow`; a host name is
        resolved here, once, and pinned in the container's /etc/hosts: engine/sandbox/resolve.py); a run with a
        network starts only once its packet filter is set and read back (engine/sandbox/netfilter.py).
        The script sees `HERALD_TASK_ID` and `HERALD_ATTEMPT` (1, then 2... when a rule retries it).

        `on_started` is awaited after the container is created and checked, before it starts; if it raises, the
        container is removed unstarted and the error propagates. With `keep=True` a run that ends by itself (exit or
        timeout) leaves its container until `remove(result.container_id)`; a run that fails or is cancelled never
        leaves it.
        """
        if self._closed:
            raise SandboxError("the sandbox is closed")
        argv_args = check_args(args)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if not isinstance(task_id, str) or "\x00" in task_id:
            raise ValueError(f"task_id must be a str without NUL bytes, got {task_id!r}")
        limits = RunLimits.for_run(self._config, timeout_s=timeout_s, memory=memory, network=network,
                                   network_allow=network_allow)
        if limits.network != "none":
            netfilter.tools()  # before anything is created: a host without iptables refuses networked runs
        if limits.network == "allow":
            # Host names become the addresses they have now, for the filter and the container's /etc/hosts; a name
            # that gives none refuses the run here (engine/sandbox/resolve.py). Off the event loop: getaddrinfo blocks.
            limits = await self._podman.call(resolve.pin, limits)
        folder = self._scripts_folder()
        script_rel = resolve_script(folder, script)
        argv = ["/bin/sh", f"/scripts/{script_rel}", *argv_args]
        from engine.sandbox import container  # podman-py, loaded with the first run

        async with self._slots:
            conn, ctr, enforced, plan, run_uid = await self._create(folder, script_rel, argv, limits, task_id,
                                                                       attempt)
            self._mine.add(ctr.id)
            exited = False
            try:
                if on_started is not None:
                    await on_started(RunStart(ctr.id, enforced, plan.missing, plan.note))
                result = await execute(conn, ctr, enforced=enforced, plan=plan, timeout_s=timeout_s,
                                       on_output=on_output, output_limit=self._config.output_limit_bytes,
                                       podman=self._podman)
                exited = True
                return result
            except PodmanFailure as exc:
                raise await self._podman.classify(conn, exc) from exc
            finally:
                if exited and keep:
                    self._kept[ctr.id] = run_uid
                else:
                    # Shielded: a cancelled run must still not leave its container behind; the pool
                    # thread finishes the removal even if nobody awaits it any more.
                    await asyncio.shield(self._podman.call(container.discard, ctr, not exited))
                    self._release(ctr.id, run_uid)  # only once its container (and processes) are gone

    async def close(self) -> None:
        """Stop the Podman service if we started it and release the worker threads.

        Cancel or finish the runs first: a run still going when the pool shuts down cannot remove its
        container any more.
        """
        if self._closed:
            return
        self._closed = True
        await self._podman.close()

    # --- internals --------------------------------------------------------------------------------

    def _release(self, container_id: str, run_uid: int | None) -> None:
        self._mine.discard(container_id)
        if run_uid is not None:
            self._uids_in_use.discard(run_uid)

    def _remove_quietly(self, conn: Connection, container_id: str) -> None:
        """Blocking: kill and remove one container; a failure is logged, not raised."""
        try:
            leftovers.remove(conn.api, container_id)
        except PodmanFailure as exc:
            log.warning("could not remove sandbox container %s: %s", container_id[:12], exc)

    def _scripts_folder(self) -> Path:
        folder = self._scripts_dir.resolve()
        if not folder.is_dir():
            raise SandboxUnavailable(f"the scripts folder {folder} does not exist: create it (mode 755)")
        return folder

    def _take_uid(self, conn: Connection) -> int | None:
        """A container uid no other run of ours is using (rootless), or None (rootful: nobody)."""
        if not conn.run_uids:
            return None
        # Random, so two herald processes sharing the sandbox user are unlikely to pick the same one.
        while True:
            uid = random.choice(conn.run_uids)
            if uid not in self._uids_in_use:
                self._uids_in_use.add(uid)
                return uid

    async def _create(
        self, folder: Path, script_rel: str, argv: list[str], limits: RunLimits, task_id: str, task_attempt: int
    ) -> tuple[Connection, Container, tuple[str, ...], LimitPlan, int | None]:
        """Create the run's container on a live connection; reconnect once if the service had died."""
        from engine.sandbox import container

        for attempt in (1, 2):
            conn = await self._podman.connection()
            run_uid = self._take_uid(conn)
            try:
                problem = access_problem(folder, script_rel, *conn.reader(run_uid))
                if problem:
                    self._podman.problem = problem
                    raise SandboxUnavailable(problem)
                if limits.network != "none":
                    refused = netfilter.can_enter(conn.podman_uid)
                    if refused:
                        raise SandboxUnavailable(refused)
                plan = plan_limits(limits, conn.host)
                spec = build_spec(config=self._config, argv=argv, scripts_src=str(folder), task_id=task_id,
                                  attempt=task_attempt, limits=limits, plan=plan, host=conn.host, run_uid=run_uid)
                if self._owner:
                    spec["labels"][leftovers.OWNER_LABEL] = self._owner
                ctr, enforced = await self._podman.call(container.create, conn, spec, plan, run_uid, limits)
                return conn, ctr, enforced, plan, run_uid
            except PodmanFailure as exc:
                self._uids_in_use.discard(run_uid)
                error = await self._podman.classify(conn, exc)
                # Nothing was created yet, so trying again on a fresh connection is safe.
                if attempt == 1 and isinstance(error, SandboxUnavailable) and self._config.autostart:
                    log.warning("%s; reconnecting", error)
                    continue
                raise error from exc
            except BaseException:
                self._uids_in_use.discard(run_uid)
                raise
        raise AssertionError("unreachable")
