"""A neutral `Message` as Telegram shows it: HTML text (parse_mode HTML, everything escaped) and an inline keyboard.

Telegram allows 1-4096 characters of text after entities are parsed, counted in UTF-16 code units, so the visible
text is cut before it is escaped (an entity such as `&amp;` or a surrogate pair is never split), with a note saying
how much was left out. Buttons carry Herald's short handles as `callback_data` (at most 64 bytes); links become
`url` buttons on a row of their own, except those Telegram would refuse (see `opens`), which become text lines.
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.plugin import Message

MAX_TEXT = 4096
CUT_NOTE = "\n[… {n} more characters not shown]"


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """`text` within `limit` UTF-16 code units, ending with a note of what was left out if it had to be cut."""
    if utf16_len(text) <= limit:
        return text
    kept, used = [], 0
    budget = limit - utf16_len(CUT_NOTE.format(n=utf16_len(text)))
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > budget:
            break
        kept.append(char)
        used += width
    return "".join(kept) + CUT_NOTE.format(n=utf16_len(text) - used)


def to_html(message: Message) -> str:
    """The message's HTML: an optional bold title, the text, then `name: value` fields, within MAX_TEXT visible."""
    title = message.title or ""
    fields = "".join(f"\n{name}: {value}" for name, value in message.fields)
    body = cut(message.text + fields, MAX_TEXT - (utf16_len(title) + 1 if title else 0))
    text = html.escape(body, quote=False)
    if title:
        text = f"<b>{html.escape(title, quote=False)}</b>\n{text}"
    return text or html.escape("(empty)")  # Telegram refuses an empty text


def keyboard(message: Message) -> dict[str, Any] | None:
    """The inline keyboard: one row of buttons, one of links; None when there is nothing to press."""
    rows: list[list[dict[str, str]]] = []
    if message.buttons:
        rows.append([{"text": b.label, "callback_data": b.handle} for b in message.buttons])
    if message.links:
        rows.append([{"text": link.label, "url": link.url} for link in message.links])
    return {"inline_keyboard": rows} if rows else None


def opens(url: str) -> bool:
    """Whether Telegram takes `url` as a keyboard button. Its parser is undocumented; as seen, it refuses the whole
    message (400 BUTTON_URL_INVALID) for an http(s) host without a dot that is not an IP address, such as
    http://localhost:8080 (https://github.com/rubenlagus/TelegramBots/issues/302) or Prometheus's own
    http://prometheus:9090, a common generatorURL."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return "." in host


def links_in_text(message: Message, keep: Callable[[str], bool] = lambda url: False) -> Message:
    """`message` with the links `keep` refuses moved from buttons into its text (`Source: http://...` lines)."""
    moved = [link for link in message.links if not keep(link.url)]
    if not moved:
        return message
    text = message.text + "".join(f"\n{link.label}: {link.url}" for link in moved)
    return message.model_copy(update={"text": text, "links": tuple(link for link in message.links if keep(link.url))})
