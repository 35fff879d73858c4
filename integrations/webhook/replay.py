"""The replay guard of signed webhooks: signatures already accepted, kept in the engine's database for their window.

In memory only, a restart forgot them, and a request captured in the last few minutes could be replayed right after
it. Kept in the integration's durable store instead (`ctx.store`, a table of the engine's database), they outlive
restarts; each expires with its window (the timestamp check refuses such a request anyway), so the store holds at
most one window of signatures.

A signature is remembered only once its body was accepted (journaled): a sender's retry after a 4xx about the body,
or after a 503, must be handled like the first try. Meanwhile it is held in memory, so the same request sent twice at
once is accepted at most once (the second gets a 409 and may retry). The signature is stored in a commit of its own
right after the events' commit and before the 200: a crash between the two lets that one request in once more
(a duplicate, never a loss).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.plugin import KeyValue
from integrations.webhook.auth import Refused, Signed


@dataclass(frozen=True)
class Held:
    """A signature held while its request is handled."""

    key: str
    until: float


class ReplayGuard:
    def __init__(self, store: KeyValue, source: str) -> None:
        self._store = store
        self._source = source  # signatures of different sources never meet
        self._in_flight: set[str] = set()

    async def claim(self, signed: Signed) -> Held:
        """Hold this signature while its request is handled (until `release`); Refused if it was accepted before or
        is being handled now."""
        key = f"signature/{self._source}/{signed.signature}"
        if key in self._in_flight:
            raise Refused(409, "the same signed request is being handled right now; retry if it fails")
        self._in_flight.add(key)  # before the first await, so a twin arriving meanwhile sees it
        try:
            seen = await self._store.get(key)
        except BaseException:
            self._in_flight.discard(key)
            raise
        if seen is not None:
            self._in_flight.discard(key)
            raise Refused(403, "replayed request (this signature was already used)")
        return Held(key, signed.until)

    async def accepted(self, held: Held) -> None:
        """Remember the signature for the rest of its window (durably, before the sender hears 200)."""
        await self._store.put(held.key, "accepted", ttl_s=max(0.0, held.until - time.time()))

    def release(self, held: Held) -> None:
        self._in_flight.discard(held.key)
