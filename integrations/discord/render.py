"""Herald's neutral `Message` as Discord's message payload: content or an embed, and action rows of buttons.

A notification becomes an embed (its colour from the severity, the text as its description, the fields as inline
fields); replies, progress and results are plain content, which is what people read in a conversation. Buttons are
message components: action rows (type 1) of up to five buttons (type 2) whose `custom_id` is Herald's short handle
(at most 64 bytes, within Discord's 100 characters); links are link buttons (style 5) with their URL.
`allowed_mentions` is empty: an alert's text that says @everyone must not ping a whole server.
"""

from __future__ import annotations

from typing import Any

from engine.plugin import Message

MAX_CONTENT = 2000  # a message's content
MAX_DESCRIPTION = 4096  # an embed's description
MAX_LABEL = 80  # a button's label
MAX_LINK_URL = 512  # a link button's url: "max 512 characters" (a longer link is left out)
ROW = 5  # buttons in an action row; a message has at most five rows
PRIMARY, SECONDARY, LINK = 1, 2, 5
ACTION_ROW, BUTTON = 1, 2
EPHEMERAL = 64  # message flag: only the person who used the interaction sees it

COLOURS = {"critical": 0xE01E5A, "error": 0xE01E5A, "high": 0xE01E5A, "warning": 0xECB22E, "medium": 0xECB22E,
           "info": 0x3498DB, "low": 0x3498DB, "resolved": 0x2EB67D, "ok": 0x2EB67D}
NEUTRAL = 0x95A5A6


def message_body(message: Message) -> dict[str, Any]:
    """The JSON for creating or editing a message (channel messages and interaction webhooks alike)."""
    body: dict[str, Any] = {"allowed_mentions": {"parse": []}, "components": components(message)}
    if message.kind == "notification" or message.title or message.fields:
        embed: dict[str, Any] = {"description": message.text[:MAX_DESCRIPTION],
                                 "color": COLOURS.get((message.severity or "").lower(), NEUTRAL)}
        if message.title:
            embed["title"] = message.title[:256]
        if message.fields:
            embed["fields"] = [{"name": name[:256] or "-", "value": value[:1024] or "-", "inline": True}
                               for name, value in message.fields[:25]]
        body["content"] = ""
        body["embeds"] = [embed]
    else:
        body["content"] = message.text[:MAX_CONTENT]
        body["embeds"] = []
    return body


def components(message: Message) -> list[dict[str, Any]]:
    buttons: list[dict[str, Any]] = [
        {"type": BUTTON, "style": PRIMARY if n == 0 else SECONDARY, "label": b.label[:MAX_LABEL],
         "custom_id": b.handle} for n, b in enumerate(message.buttons)]
    buttons += [{"type": BUTTON, "style": LINK, "label": link.label[:MAX_LABEL], "url": link.url}
                for link in message.links if len(link.url) <= MAX_LINK_URL]
    return [{"type": ACTION_ROW, "components": buttons[i:i + ROW]} for i in range(0, min(len(buttons), ROW * ROW), ROW)]
