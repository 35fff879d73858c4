"""The lanes between accepting an event and running its rules.

An accepted event (journaled) waits in one of `LANES` queues, chosen so that the events of one conversation, one
alert or one chain of events run in order, while different ones run side by side (their writes then share a commit).
An event whose rule run hit a full disk is not lost: it waits (engine/server/full_disk.py) and runs again, with the
same run ids, once the disk takes writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from engine.core.errors import DurabilityError
from engine.core.events import AlertData, Event
from engine.core.store import Database
from engine.server import full_disk

log = logging.getLogger("herald.engine")

LANES = 32  # rule runs in flight at once: more share each commit (8 -> 32: +40-50% end to end at batch 100)
WAITING_AS_OBJECTS = 1_000  # beyond this many waiting events, the queue keeps their JSON (see `enqueue`)

Spawn = Callable[[str, Callable[[], Coroutine[Any, Any, None]]], None]


def lane_of(event: Event) -> int:
    """The dispatch lane of an event: by conversation, else by alert, else by the chain of events it belongs to."""
    if event.reply_to is not None:
        key = f"{event.reply_to.platform}/{event.reply_to.chat}"
    elif isinstance(event.data, AlertData):
        key = event.data.fingerprint
    else:
        key = event.cause.root or event.id
    return zlib.crc32(key.encode()) % LANES


class Dispatcher:
    def __init__(self, db: Database, handle: Callable[[Event], Awaitable[None]], *,
                 on_stalled: Callable[[], None]) -> None:
        self._handle = handle
        self._on_stalled = on_stalled  # counted in /metrics
        self._lanes: list[asyncio.Queue[Event | str]] = [asyncio.Queue() for _ in range(LANES)]
        self._stalled = full_disk.Stalled(db, self._requeue)  # events that hit a full disk, until it takes writes
        self.waiting = 0  # accepted events whose rule runs have not finished yet

    def start(self, spawn: Spawn) -> None:
        for n, lane in enumerate(self._lanes):
            spawn(f"dispatcher-{n}", functools.partial(self._run, lane))
        spawn("stalled-events", self._stalled.run)

    def enqueue(self, event: Event, body: str) -> None:
        """Queue an accepted event for its rule runs. Past `WAITING_AS_OBJECTS` waiting events (a burst), the queue
        holds the event's journaled body instead of the event: about 0.5 kB instead of 3 kB each, for ~3 us to read
        it back when its turn comes (what runs is then exactly what a replay after a crash would run)."""
        self.waiting += 1
        self._lanes[lane_of(event)].put_nowait(event if self.waiting <= WAITING_AS_OBJECTS else body)

    def _requeue(self, item: Event | str) -> None:
        event = item if isinstance(item, Event) else Event.model_validate_json(item)
        self.waiting += 1
        self._lanes[lane_of(event)].put_nowait(item)

    async def _run(self, lane: asyncio.Queue[Event | str]) -> None:
        while True:
            item = await lane.get()
            try:
                event = item if isinstance(item, Event) else Event.model_validate_json(item)
                await self._handle(event)
            except DurabilityError as exc:  # not handled: it waits for the disk, then runs again (same run ids)
                log.warning("event %s waits for the data disk: %s", event.id, exc)
                self._on_stalled()
                self._stalled.add(item)
            except Exception:
                log.exception("handling event %s failed; it stays in the journal for replay",
                              item.id if isinstance(item, Event) else item[:80])
            finally:
                self.waiting -= 1
