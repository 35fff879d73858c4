"""Riding out a full or failing data disk, so that "accepted" keeps meaning "will be handled".

- At start, a store that cannot open (no room for its WAL, say) is waited for, while a stand-in server on Herald's
  port answers every request with 503, the reason and Retry-After (`open_store`), and a store that opens but takes
  no writes is waited for too (`wait_for_writes`): Herald starts late rather than exits.
- While running, the engine refuses new events whenever `Database.trouble` is set (a failed write, or less room than
  `min_free_disk_mb`), and events whose rule runs hit the full disk wait in `Stalled`, still `accepted` in the
  journal, until a small write works again; then they run again (with the same run ids, so nothing done twice).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
from collections.abc import Callable, Iterable

from aiohttp import web

from engine.core.errors import StorageFull
from engine.core.events import Event
from engine.core.store import Database

RETRY_AFTER_S = 10  # what a refusal for a full data disk tells senders to wait
PROBE_FIRST_S = 0.5
PROBE_MAX_S = 5.0
IDLE_CHECK_S = 1.0
log = logging.getLogger("herald.storage")


class Stalled:
    """Accepted events whose rule runs could not be recorded, until the disk takes writes again."""

    def __init__(self, db: Database, requeue: Callable[[Event | str], None]) -> None:
        self._db = db
        self._requeue = requeue
        self._items: list[Event | str] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Event | str) -> None:
        self._items.append(item)

    async def run(self) -> None:
        """Check the free space each second; while the disk is in trouble (or events wait), probe it with backoff,
        and when it takes writes, hand the events back."""
        delay = PROBE_FIRST_S
        while True:
            if self._db.trouble is None and not self._items:
                delay = PROBE_FIRST_S
                await asyncio.sleep(IDLE_CHECK_S)
                self._db.check_space()
                continue
            await asyncio.sleep(delay)
            if not await self._db.probe():
                delay = min(delay * 2, PROBE_MAX_S)
                continue
            items, self._items = self._items, []
            if items:
                log.warning("the data disk takes writes again: handling the %d events that waited for it", len(items))
            for item in items:
                self._requeue(item)


async def open_store(db: Database, schemas: Iterable[str | Callable[[sqlite3.Connection], None]], *, host: str,
                     port: int, ssl_context: ssl.SSLContext | None) -> None:
    """Open the database; on a full disk, wait for room, answering 503s with the reason meanwhile."""
    stand_in: web.AppRunner | None = None
    delay = PROBE_FIRST_S
    try:
        while True:
            try:
                await db.open(schemas)
                return
            except StorageFull as exc:
                log.error("%s: Herald waits for room before it starts; until then it answers every request with 503 "
                          "and the reason", exc)
            if stand_in is None:
                stand_in = await _refuse_everything(host, port, lambda: str(db.trouble), ssl_context)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_S)
    finally:
        if stand_in is not None:
            await stand_in.cleanup()


async def wait_for_writes(db: Database) -> None:
    """Wait until a write works (the engine's own server answers 503s with the reason meanwhile)."""
    delay = PROBE_FIRST_S
    while not await db.probe():
        log.error("the data disk cannot take writes (%s): Herald waits for room before it starts; until then it "
                  "refuses every event with 503 and /healthz says why", db.trouble)
        await asyncio.sleep(delay)
        delay = min(delay * 2, PROBE_MAX_S)


async def _refuse_everything(host: str, port: int, reason: Callable[[], str],
                             ssl_context: ssl.SSLContext | None) -> web.AppRunner:
    async def refuse(request: web.Request) -> web.Response:
        why = f"the data disk cannot take writes ({reason()})"
        if request.path == "/healthz":
            return web.json_response({"status": "storage unavailable", "reason": why}, status=503)
        return web.json_response({"error": f"try again later: {why}"}, status=503,
                                 headers={"Retry-After": str(RETRY_AFTER_S)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True).start()
    return runner
