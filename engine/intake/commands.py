"""Chat text to a command: `/backup now` -> CommandData(name="backup", args=("now",)).

Shared by every platform that receives typed commands, so they all split and refuse text the same way.
"""

from __future__ import annotations

import re

from engine.core.errors import HeraldError
from engine.core.events import CommandData

MAX_COMMAND_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # everything below space but tab, and DEL


class CommandTextError(HeraldError, ValueError):
    """The text looks like a command but cannot be one; the message says why, for the sender."""


def parse_command(text: str) -> CommandData | None:
    """The command in `text`, or None when the text is not a command (does not start with '/')."""
    text = text.strip()
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandTextError(f"a command is at most {MAX_COMMAND_CHARS} characters")
    if _CONTROL.search(text):
        raise CommandTextError("a command is one line of printable text (no newlines or control characters)")
    name, *args = text[1:].split()
    return CommandData(name=name.lower(), args=tuple(args), text=text)
