"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32).

Monotonic within one process: ids made in the same millisecond increment the previous one instead of drawing new
random bits, so ids sort in the order they were made (events of one webhook body keep their order).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def derived_id(when: datetime, *parts: str) -> str:
    """A stable id for a derived thing (the run of a rule on an event, the task of a run's action), so a replay
    after a crash names the same thing again instead of making a second one. Same layout as `new_id`: the time of
    what it derives from, then 80 bits of a hash of `parts`, so it still sorts by time."""
    digest = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:10], "big")
    return _encode(int(when.timestamp() * 1000) << _RANDOM_BITS | digest)


def time_prefix(when: datetime) -> str:
    """The first 10 characters of every id made or derived for `when` (its millisecond): a range to look ids up in."""
    return _encode(int(when.timestamp() * 1000) << _RANDOM_BITS)[:10]


# Two base32 digits per 10 bits: 13 table lookups per id instead of 26 divisions (ids are made per event).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_RANDOM_POOL_BYTES = 4096  # one getrandom() call serves ~400 ids
_pool = b""
_pool_at = 0


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def _random_bits() -> int:
    """80 bits from the OS's CSPRNG, drawn in bulk (call with `_lock` held)."""
    global _pool, _pool_at
    if _pool_at + 10 > len(_pool):
        _pool, _pool_at = os.urandom(_RANDOM_POOL_BYTES), 0
    _pool_at += 10
    return int.from_bytes(_pool[_pool_at - 10:_pool_at], "big")


def new_id() -> str:
    """Return a 26-character id that sorts by creation time, and by creation order within this process."""
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | _random_bits()
        if value <= _last:  # same millisecond (or the clock stepped back): stay ordered
            value = _last + 1
        _last = value
    return _encode(value)
