"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32).

Monotonic within one process: ids made in the same millisecond increment the previous one instead of drawing new
random bits, so ids sort in the order they were made (events of one webhook body keep their order).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """Return a 26-character id that sorts by creation time, and by creation order within this process."""
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | int.from_bytes(os.urandom(10), "big")
        if value <= _last:  # same millisecond (or the clock stepped back): stay ordered
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))
