"""Herald's neutral messages as Matrix event contents, and what comes back: pure functions, no I/O.

Outgoing messages are `m.notice` (the spec's kind for bots: clients show them apart and bots do not answer them)
with a plain `body` and the same text as escaped HTML in `formatted_body`. Edits are `m.replace` relations whose
`m.new_content` is the new message, with a fallback body prefixed "* " for clients that do not apply edits.
"""

from __future__ import annotations

import html
import re
from typing import Any

from engine.plugin import Message

HTML_FORMAT = "org.matrix.custom.html"
CHOICES_PREFIX = "Reply with a number: "  # engine.delivery.render's line of numbered choices
# Reactions that press a numbered choice: the keycap digits always, and a sign for the usual labels.
KEYCAPS = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣"]
LABEL_EMOJI = {"Acknowledge": "✅", "Mute 1h": "🔕", "Resolve": "☑️"}
_REPLY_FALLBACK = re.compile(r"\A(?:> .*\n)+\n", re.MULTILINE)


def notice(message: Message) -> dict[str, Any]:
    """The content of an `m.room.message` for `message`: a notice, its HTML escaped, threaded as a reply. Links
    (Matrix has no link buttons) are `label: url` lines in the body and anchors in the HTML, before the numbered
    choices, which stay the last line."""
    text, choices = _split_choices(message.text)
    body = text + "".join(f"\n{link.label}: {link.url}" for link in message.links) + choices
    if message.title:
        body = f"{message.title}\n{body}"
    rich = _html(text)
    if message.links:
        anchors = " · ".join(f'<a href="{html.escape(link.url, quote=True)}">{html.escape(link.label)}</a>'
                             for link in message.links)
        rich += f"<br/>{anchors}"
    rich += _html(choices)
    if message.title:
        rich = f"<b>{html.escape(message.title)}</b><br/>{rich}"
    content: dict[str, Any] = {"msgtype": "m.notice", "body": body, "format": HTML_FORMAT, "formatted_body": rich}
    if message.in_reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.in_reply_to}}
    return content


def _split_choices(text: str) -> tuple[str, str]:
    """A message's text, and its closing line of numbered choices (with the blank line before it), if any."""
    head, found, line = text.rpartition("\n\n" + CHOICES_PREFIX)
    return (head, found + line) if found else (text, "")


def _html(text: str) -> str:
    return html.escape(text).replace("\n", "<br/>")


def replacement(event_id: str, message: Message) -> dict[str, Any]:
    """The content of an edit of `event_id` to say `message` now."""
    new = notice(message.model_copy(update={"in_reply_to": None}))
    return {"msgtype": "m.notice", "body": "* " + new["body"], "format": HTML_FORMAT,
            "formatted_body": "* " + new["formatted_body"], "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}}


def reaction_choices(message: Message, handles: list[str]) -> dict[str, str]:
    """Which reaction presses which button handle on a message with numbered choices (emoji -> handle)."""
    labels = choice_labels(message.text)
    found: dict[str, str] = {}
    for n, handle in enumerate(handles):
        if n < len(KEYCAPS):
            found[KEYCAPS[n]] = handle
        if n < len(labels) and labels[n] in LABEL_EMOJI:
            found[LABEL_EMOJI[labels[n]]] = handle
    return found


def offered_reactions(message: Message, handles: list[str]) -> list[str]:
    """The reactions the bot puts under a notification, one per choice, for people to tap: the label's sign where
    it has one (✅, 🔕), else the choice's keycap digit."""
    labels = choice_labels(message.text)
    return [LABEL_EMOJI.get(labels[n], KEYCAPS[n]) if n < len(labels) else KEYCAPS[n]
            for n in range(min(len(handles), len(KEYCAPS)))]


def reaction(event_id: str, emoji: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": emoji}}


def choice_labels(text: str) -> list[str]:
    """The labels of the numbered choices at the end of a message ("... Reply with a number: 1 Ack · 2 Mute 1h")."""
    _, found, line = text.rpartition(CHOICES_PREFIX)
    if not found:
        return []
    labels = []
    for part in line.strip().split(" · "):
        number, _, label = part.partition(" ")
        if number.isdigit() and label:
            labels.append(label)
    return labels


def command_text(body: str) -> str:
    """What a person wrote, as Herald reads it: a reply's quoted fallback dropped, `!cmd` read as `/cmd` (some
    clients take a leading slash as their own command)."""
    text = _REPLY_FALLBACK.sub("", body, count=1).strip()
    return "/" + text[1:] if text.startswith("!") and len(text) > 1 and not text.startswith("!!") else text


def emoji_key(emoji: str) -> str:
    """A reaction's key without variation selectors, so ✅ and ✅︎ press the same button."""
    return emoji.replace("\ufe0f", "").replace("\ufe0e", "")


def notice_for(text: str, *, in_reply_to: str | None = None) -> dict[str, Any]:
    """A notice with just `text` (an answer the connector gives itself, outside the outbox)."""
    return notice(Message(kind="reply", text=text, in_reply_to=in_reply_to))
