"""One sender per platform: takes durable outbox rows and delivers them through the platform's connector.

- Order per conversation: a conversation's rows go out one at a time, oldest first; different conversations go out
  side by side (at most `PARALLEL` in flight per platform), so one slow chat does not hold back the others.
- Rate limits: a `RateLimited` answer pauses the whole platform for its `retry_after` and the row is tried again;
  it is never dropped.
- Failures: `Unavailable` (and any unexpected exception) is retried with exponential backoff and full jitter, for as
  long as it takes; `Rejected` ends the row as failed. A platform that is down never blocks another platform, nor the
  engine: rows wait in the outbox.
- Edits: at most one edit per message every `capabilities.edit_interval_s`; when an edit would have to wait and a
  newer edit of the same message is already queued, the older one is superseded (only the newest state is shown).
  An edit of a message whose reference is unknown (it failed, or the platform cannot edit) is sent as a new message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from engine.delivery.connector import Connector, DeliveryError, RateLimited, Rejected
from engine.delivery.message import MessageRef
from engine.delivery.outbox import Outbox, Outgoing
from engine.delivery.render import fit

log = logging.getLogger("herald.delivery")

PARALLEL = 8  # conversations of one platform in flight at once
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
REFS_KEPT = 1_000  # recent message references kept in memory (older ones are read from the outbox when edited)


def backoff(first_s: float = BACKOFF_FIRST_S, cap_s: float = BACKOFF_MAX_S) -> Iterator[float]:
    """Delays for successive retries: exponential, capped, with full jitter (so many retries do not align)."""
    attempt = 0
    while True:
        yield random.uniform(0, min(cap_s, first_s * 2 ** attempt))
        attempt += 1


@dataclass(frozen=True)
class Delivered:
    """What happened to one row, for the audit, /metrics and observers."""

    item: Outgoing
    outcome: str  # "sent" | "failed" | "superseded"
    ref: MessageRef | None = None
    error: str = ""


class PlatformSender:
    def __init__(self, connector: Connector, outbox: Outbox, *,
                 on_done: Callable[[Delivered], Awaitable[None]], backoff_first_s: float = BACKOFF_FIRST_S) -> None:
        self.connector = connector
        self._outbox = outbox
        self._on_done = on_done
        self._backoff_first_s = backoff_first_s
        self._queues: dict[str, deque[Outgoing]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(PARALLEL)
        self._paused_until = 0.0
        self._refs: OrderedDict[str, MessageRef] = OrderedDict()
        self._last_edit: dict[str, float] = {}
        self._closed = False

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def offer(self, items: Sequence[Outgoing]) -> None:
        """Take rows that are durable in the outbox, in outbox order."""
        for item in items:
            address = item.to.address
            self._queues.setdefault(address, deque()).append(item)
            if address not in self._workers and not self._closed:
                self._workers[address] = asyncio.create_task(self._drain(address), name=f"send-{address}")

    async def close(self) -> None:
        self._closed = True
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _drain(self, address: str) -> None:
        queue = self._queues[address]
        try:
            while queue:
                item = queue[0]
                if item.op == "edit" and self._superseded(item, queue):
                    queue.popleft()
                    await self._finish(Delivered(item, "superseded"))
                    continue
                async with self._slots:
                    done = await self._deliver(item)
                queue.popleft()
                await self._finish(done)
        finally:
            self._workers.pop(address, None)
            if not queue:
                self._queues.pop(address, None)
            elif not self._closed:  # rows arrived while this worker was finishing
                self._workers[address] = asyncio.create_task(self._drain(address), name=f"send-{address}")

    def _superseded(self, item: Outgoing, queue: deque[Outgoing]) -> bool:
        """An edit that would have to wait for the edit interval, with a newer edit of the same message queued."""
        interval = self.connector.capabilities.edit_interval_s
        if time.monotonic() - self._last_edit.get(item.target or "", float("-inf")) >= interval:
            return False
        return any(other.op == "edit" and other.target == item.target for other in list(queue)[1:])

    async def _deliver(self, item: Outgoing) -> Delivered:
        delays = backoff(self._backoff_first_s)
        while True:
            item.attempts += 1
            try:
                await self._respect_pause()
                ref = await self._attempt(item)
                return Delivered(item, "sent", ref)
            except RateLimited as exc:
                self._paused_until = max(self._paused_until, time.monotonic() + exc.retry_after_s)
                log.warning("%s: rate limited, pausing %.1fs", self.connector.platform, exc.retry_after_s)
            except Rejected as exc:
                log.warning("%s refused message %s for %s: %s", self.connector.platform, item.key, item.to.address,
                            exc)
                return Delivered(item, "failed", error=str(exc))
            except DeliveryError as exc:
                delay = next(delays)
                log.warning("%s: delivery to %s failed (%s); retry %d in %.1fs", self.connector.platform,
                            item.to.address, exc, item.attempts, delay)
                await asyncio.sleep(delay)
            except Exception:  # a connector bug; the row is kept and retried rather than lost
                delay = next(delays)
                log.exception("%s: sending %s failed unexpectedly; retry in %.1fs", self.connector.platform,
                              item.key, delay)
                await asyncio.sleep(delay)

    async def _attempt(self, item: Outgoing) -> MessageRef:
        connector = self.connector
        message = fit(item.message, connector.capabilities)
        if item.op == "edit" and connector.capabilities.edits and item.target is not None:
            ref = self._refs.get(item.target) or await self._outbox.ref_of(item.target)
            if ref is not None:
                wait = self._last_edit.get(item.target, float("-inf")) + connector.capabilities.edit_interval_s \
                    - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                new_ref = await connector.edit(ref, message, key=item.key, seq=item.seq)
                self._last_edit[item.target] = time.monotonic()
                return new_ref
        ref = await connector.send(item.to, message, key=item.key, seq=item.seq)
        self._remember(item.target if item.op == "edit" and item.target else item.key, ref)
        return ref

    def _remember(self, key: str, ref: MessageRef) -> None:
        self._refs[key] = ref
        if len(self._refs) > REFS_KEPT:
            # popitem, not pop(next(iter())): a dict's iteration walks past the slots of every entry popped from
            # its front since its last resize (3 us per message when 10,000 were kept)
            self._refs.popitem(last=False)

    async def _respect_pause(self) -> None:
        wait = self._paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _finish(self, done: Delivered) -> None:
        quick = done.outcome == "sent" and self.connector.capabilities.dedupes
        await self._outbox.finish(done.item, done.outcome, ref=done.ref, error=done.error,  # type: ignore[arg-type]
                                  wait=not quick)
        try:
            await self._on_done(done)
        except Exception:
            log.exception("reporting delivery of %s failed", done.item.key)
