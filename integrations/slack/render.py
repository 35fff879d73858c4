"""Herald's neutral Message as Slack Block Kit: a section with the text, its fields, a row of buttons, the
severity as an attachment's colour bar, and always a plain `text` fallback (notifications and screen readers use it).

Limits (https://api.slack.com/reference/block-kit/blocks): a section's text is at most 3000 characters, a header's
150, at most 10 fields of 2000, a button's label 75 and its value 2000. Herald's button handle (at most 64 bytes)
is both the button's `value` and its `action_id` (unique within a message, as Slack requires).
"""

from __future__ import annotations

from typing import Any

from engine.plugin import Message

MAX_SECTION = 3000
COLOURS = {"critical": "#d62728", "error": "#d62728", "warning": "#ff9f1c", "info": "#1f77b4", "ok": "#2ca02c",
           "resolved": "#2ca02c"}


def escape(text: str) -> str:
    """Slack's three control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fallback(message: Message) -> str:
    return escape(f"{message.title}\n{message.text}" if message.title else message.text)


def blocks(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if message.title:
        out.append({"type": "header", "text": _plain(message.title[:150])})
    out.append({"type": "section", "text": _plain(message.text[:MAX_SECTION] or " ")})
    if message.fields:
        out.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(v)}"[:2000]}
                                                  for k, v in message.fields[:10]]})
    elements: list[dict[str, Any]] = [
        {"type": "button", "text": _plain(b.label[:75]), "action_id": b.handle, "value": b.handle}
        for b in message.buttons]
    elements += [{"type": "button", "text": _plain(link.label[:75]), "url": link.url,
                  "action_id": f"link-{n}"} for n, link in enumerate(message.links)]
    if elements:
        out.append({"type": "actions", "elements": elements[:25]})
    return out


def payload(message: Message) -> dict[str, Any]:
    """The body of chat.postMessage / chat.update (without channel and ts)."""
    body: dict[str, Any] = {"text": fallback(message)}
    if message.severity:  # blocks inside an attachment get its colour bar
        colour = COLOURS.get(message.severity.lower(), "#888888")
        body["attachments"] = [{"color": colour, "blocks": blocks(message)}]
    else:
        body["blocks"] = blocks(message)
    return body


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}
