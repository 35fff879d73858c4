"""Decoding what outsiders send (JSON bodies and frames, header values) so that hostile encodings stop at the door.

Three inputs the standard library accepts but Herald cannot hold, each refused here with a reason the sender can act
on instead of failing later as a 500:

- JSON nested deeper than Python's recursion limit: `json.loads` raises RecursionError, which is not a ValueError.
- A lone UTF-16 surrogate written as an escape (`"\\ud800"`): it decodes to a str that cannot be encoded as UTF-8,
  so the event is accepted and then fails when it is journaled.
- Raw non-ASCII bytes in a header (`Authorization: Bearer caf\\xe9`): aiohttp keeps them as surrogate escapes, and
  the first `.encode()` (comparing a token, checking a signature) raises UnicodeEncodeError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Only a `\\uD800`-`\\uDFFF` escape can make a lone surrogate out of valid UTF-8 input, so only then is the decoded
# value walked (a proper pair is joined into one code point by the decoder and encodes fine).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


class UnreadableInput(ValueError):
    """Input that cannot be decoded into something Herald can hold; the message says why, for the sender."""


def load_json(raw: str | bytes) -> Any:
    """`json.loads` that raises UnreadableInput (a ValueError) for every way the input can be bad."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise UnreadableInput("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise UnreadableInput(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise UnreadableInput(str(exc)) from None
    pattern = _SURROGATE_ESCAPE_BYTES if isinstance(raw, bytes) else _SURROGATE_ESCAPE
    if pattern.search(raw) is not None:  # type: ignore[arg-type]
        where = _lone_surrogate(value)
        if where is not None:
            path, char = where
            raise UnreadableInput(f"{path or 'the body'} holds a lone UTF-16 surrogate (\\u{ord(char):04x}); "
                                  "text must be valid Unicode")
    return value


def unencodable(text: str) -> str | None:
    """The first character of `text` that cannot be written as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def _lone_surrogate(value: Any) -> tuple[str, str] | None:
    """(dotted path, character) of the first lone surrogate in a decoded JSON value, keys included. Iterative, so a
    deep value cannot overflow the stack here either."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            char = unencodable(item)
            if char is not None:
                return path, char
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                char = unencodable(key)
                if char is not None:
                    return f"a key in {path or 'the body'}", char
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), child) for i, child in reversed(list(enumerate(item))))
    return None


def ascii_header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, or None when absent; UnreadableInput when it holds bytes outside ASCII (credentials,
    signatures and times are ASCII by definition, so such a value is never a typo worth guessing at)."""
    value = headers.get(name)
    if value is not None and not value.isascii():
        raise UnreadableInput(f"the {name} header must be ASCII")
    return value
