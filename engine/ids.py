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


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id() -> str:
    """Return a 26-character id that sorts by creation time, and by creation order within this process."""
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | int.from_bytes(os.urandom(10), "big")
        if value <= _last:  # same millisecond (or the clock stepped back): stay ordered
            value = _last + 1
        _last = value
    return _encode(value)
