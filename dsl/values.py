"""Literal values of the rule language: durations, sizes, quoted text, and classifying a bare word.

Small pure functions shared by the builder (reading what was written), the checks (is this literal what the
field needs?) and the argument binder (typing what a chat user typed).
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"([0-9]+[dhms])+")
_DURATION_PART = re.compile(r"([0-9]+)([dhms])")
_SIZE = re.compile(r"([0-9]+)([kmgt]?)(i?)b?", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_ESCAPE = re.compile(r"\\(.)")


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `30s`, `10m`, `2h30m` (parts add up)."""
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text)))


def is_duration(text: str) -> bool:
    return _DURATION.fullmatch(text) is not None


def is_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None


def is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


def number(text: str) -> int | float:
    """`5` -> 5, `2.5` -> 2.5 (the caller checked `is_number`)."""
    return int(text) if _INT.fullmatch(text) else float(text)


def size_bytes(text: str) -> int:
    """Bytes in a size: `512m` and `512mb` are 512 MiB; sizes are binary (a `1g` memory limit is 1 GiB)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * 1024 ** _SIZE_POWER[match.group(2).lower()]


def unquote(token: str) -> str:
    """The text inside `"..."`, with `\\"` and `\\\\` turned back into `"` and `\\`."""
    inside = token[1:-1]
    return _ESCAPE.sub(r"\1", inside) if "\\" in inside else inside


def quote(text: str) -> str:
    """`unquote`'s inverse: how the formatter writes text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unslash(token: str) -> str:
    """The pattern inside `/.../`; `\\/` stands for a slash, every other escape is the regex's own."""
    return token[1:-1].replace("\\/", "/")


def slash(pattern: str) -> str:
    """`unslash`'s inverse."""
    return "/" + pattern.replace("/", "\\/") + "/"


def human_duration(seconds: float) -> str:
    """A wait as people write it, rounded up to two units: `3000` -> `50m`, `3900` -> `1h 5m`, `42.2` -> `43s`.

    Rounded up, because it answers "when may I try again": a wait shown shorter than it is would fail again.
    Seconds are shown under ten minutes only; above a day, hours are the finest unit.
    """
    left = max(1, math.ceil(seconds))
    if left >= 86400:
        step = 3600
    elif left >= 600:
        step = 60
    else:
        step = 1
    left = -(-left // step) * step
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def format_duration(seconds: float) -> str:
    """The canonical spelling of a duration: `90` -> `1m30s`, `0` -> `0s`."""
    left = int(seconds)
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"
