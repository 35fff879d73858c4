"""Chat text to a command: `/backup now` -> CommandData(name="backup", args=("now",)).

Shared by every platform that receives typed commands, so they all split and refuse text the same way.

What a person sees must be what Herald runs, so command text is normalised to NFC (an accent typed as two code points
is the same word as the composed one) and refused, with the character named, when it holds anything that would make
the two differ: control characters (a newline, NEL), line and paragraph separators, Unicode spaces other than the
plain one (NBSP and friends would split words nobody sees split), invisible formatting characters (bidi overrides
such as U+202E that show text in another order, zero-width spaces and joiners) and lone surrogates. Words are split
on plain spaces and tabs only.
"""

from __future__ import annotations

import re
import unicodedata

from engine.core.errors import HeraldError
from engine.core.events import CommandData

MAX_COMMAND_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # everything below space but tab, and DEL
_SEPARATORS = re.compile(r"[ \t]+")
# Unicode categories refused anywhere in a command: other controls (C1, NEL), line and paragraph separators,
# spaces other than ' ' (checked apart), format characters (bidi controls, zero-width ones, soft hyphen) and surrogates.
_REFUSED_CATEGORIES = {
    "Cc": "control characters",
    "Zl": "line separators",
    "Zp": "paragraph separators",
    "Zs": "spaces other than the plain space (words are separated by plain spaces)",
    "Cf": "invisible formatting characters (such as right-to-left overrides or zero-width spaces)",
    "Cs": "lone UTF-16 surrogates (text must be valid Unicode)",
}


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
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        _refuse_hidden(text)
    name, *args = _SEPARATORS.split(text[1:])
    return CommandData(name=name.lower(), args=tuple(args), text=text)


def _refuse_hidden(text: str) -> None:
    for char in text:
        if char.isascii():  # ASCII controls were refused above; space and tab separate words
            continue
        category = unicodedata.category(char)
        what = _REFUSED_CATEGORIES.get(category)
        if what is not None:
            raise CommandTextError(f"a command may not hold {what}; found {_describe(char)}")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"
