"""Seeing a created container through to its end, and what it did: a run's, or an adopted one's.

`execute` starts a run's container, relays its output live, SIGKILLs it at its timeout and builds its
`SandboxResult`; `await_adopted` waits for a container an earlier process started (after a crash: see
engine/sandbox/leftovers.py) and reads its output from Podman's log. engine/sandbox/runner.py checks a run, creates
its container and removes it; these functions only watch one to its end, calling blocking code through the
sandbox's one door (`PodmanSession.call`, engine/sandbox/session.py).

Output comes from the container's attach stream, which carries every byte the script writes: the
first `output_limit_bytes` are kept (and streamed line by line to `on_output`), the rest is counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.sandbox import leftovers
from engine.sandbox.host import Connection
from engine.sandbox.output import STDERR, STDOUT, WAIT_SLACK_S, OutputSink, feed_log, open_attach, read_log
from engine.sandbox.output import pump as pump_stream
from engine.sandbox.policy import LimitPlan
from engine.sandbox.session import PodmanSession

if TYPE_CHECKING:
    from engine.sandbox.container import Container

log = logging.getLogger(__name__)

_DRAIN_S = 5.0  # after exit, how long the attach stream may take to deliver its last bytes


@dataclass(frozen=True)
class SandboxResult:
    """What one run did. `exit_code` is None when the run timed out and was killed."""

    exit_code: int | None
    output: str  # stdout and stderr interleaved, capped at output_limit_bytes (+ a truncation note)
    timed_out: bool
    duration_s: float  # container start to exit
    enforced: tuple[str, ...]  # protections read back from the created container, and each limit's mechanism
    output_bytes: int = 0  # everything the script printed, kept or not
    not_enforced: tuple[str, ...] = ()  # limits this host could not apply, and why
    limits_note: str = ""  # one line for people: each limit's mechanism, then what the host could not enforce
    container_id: str = ""  # still there only after a run with keep=True, or an adoption: `remove()` it
    stdout_tail: str = ""  # the end of stdout alone, and of stderr alone (`output` has both, interleaved)
    stderr_tail: str = ""


async def execute(
    conn: Connection,
    ctr: Container,
    *,
    enforced: tuple[str, ...],
    plan: LimitPlan,
    timeout_s: float,
    on_output: Callable[[str], None] | None,
    output_limit: int,
    podman: PodmanSession,
) -> SandboxResult:
    """Start `ctr` (created, not started), relay its output lines to `on_output` as they are printed, SIGKILL it
    `timeout_s` after it started, and collect what it did; every line has been delivered when this returns.

    Blocking calls go through `podman`, whose pool also holds what runs alongside (the attach reader, the exit wait).
    """
    loop = asyncio.get_running_loop()
    emit: Callable[[str], None] | None = None
    if on_output is not None:
        callback = on_output

        def emit(line: str) -> None:  # called from the attach thread, and from finish() here
            loop.call_soon_threadsafe(_deliver, callback, line)

    from engine.sandbox import container

    sink = OutputSink(output_limit, emit)
    sock = await podman.call(open_attach, conn.url, ctr.id, timeout_s)
    pump: asyncio.Future[None] | None = None
    try:
        if sock is not None:
            pump = loop.run_in_executor(podman.pool, pump_stream, sock, sink)
        started = time.perf_counter()
        await podman.call(container.start, ctr)
        exit_code, timed_out = await _wait_or_kill(ctr, timeout_s, podman)
        duration = time.perf_counter() - started
        if pump is not None:
            # conmon closes the stream once the container's stdio is drained: normally at once.
            _, pending = await asyncio.wait({pump}, timeout=_DRAIN_S)
            if pending:
                log.warning("attach stream of %s did not end %.0f s after exit", ctr.id[:12], _DRAIN_S)
        else:
            feed_log(sink, await podman.call(read_log, conn.api, ctr.id, output_limit))
    finally:
        if sock is not None:
            sock.close()  # also ends a pump still blocked on it (a cancelled or stuck run)
    sink.finish()
    if emit is not None:
        # call_soon_threadsafe keeps FIFO order: once this sentinel runs, every line has been delivered.
        flushed = loop.create_future()
        loop.call_soon_threadsafe(flushed.set_result, None)
        await flushed
    output = sink.head.decode(errors="replace")
    if sink.truncated:
        output += "\n" + sink.truncation_note()
    return SandboxResult(
        exit_code=None if timed_out else exit_code,
        output=output,
        timed_out=timed_out,
        duration_s=duration,
        enforced=enforced,
        output_bytes=sink.total,
        not_enforced=plan.missing,
        limits_note=plan.note,
        container_id=ctr.id,
        stdout_tail=sink.tail(STDOUT),
        stderr_tail=sink.tail(STDERR),
    )


async def await_adopted(conn: Connection, ctr: Container, *, started_at: float, timeout_s: float,
                        output_limit: int, podman: PodmanSession) -> SandboxResult:
    """Wait for a container an earlier process started (at `started_at`, epoch seconds) to exit, SIGKILL it
    `timeout_s` after it started, and read its exit code and output from Podman's log (lines are not streamed)."""
    from engine.sandbox import container

    exit_code, timed_out = await _wait_or_kill(ctr, max(0.0, timeout_s - (time.time() - started_at)), podman)
    attrs = await podman.call(container.reload, ctr)
    sink = OutputSink(output_limit, None)
    feed_log(sink, await podman.call(read_log, conn.api, ctr.id, output_limit))
    output = sink.head.decode(errors="replace")
    if sink.truncated:
        output += "\n" + sink.truncation_note()
    duration = leftovers.finished_after_s(attrs)
    log.info("adopted container %s: it %s", ctr.id[:12],
             "timed out and was killed" if timed_out else f"exited with {exit_code}")
    return SandboxResult(
        exit_code=None if timed_out else exit_code, output=output, timed_out=timed_out,
        duration_s=duration if duration is not None else time.time() - started_at, enforced=(),
        output_bytes=sink.total, container_id=ctr.id, stdout_tail=sink.tail(STDOUT),
        stderr_tail=sink.tail(STDERR),
    )


async def _wait_or_kill(ctr: Container, timeout_s: float, podman: PodmanSession) -> tuple[int | None, bool]:
    """Wait for a started container to exit; SIGKILL it if it still runs after `timeout_s`. Returns its exit code
    and whether it was killed for its time."""
    from engine.sandbox import container

    waiter = asyncio.get_running_loop().run_in_executor(podman.pool, container.wait, ctr, timeout_s + WAIT_SLACK_S)
    # If the run is cancelled, nobody awaits the waiter; its late error must not be logged as lost.
    waiter.add_done_callback(_consume_result)
    done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
    timed_out = False
    if not done:
        timed_out = await podman.call(container.kill, ctr)
    return await waiter, timed_out


def _consume_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _deliver(on_output: Callable[[str], None], line: str) -> None:
    try:
        on_output(line)
    except Exception:  # a broken listener must not break the run
        log.exception("on_output callback failed")
