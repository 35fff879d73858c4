"""The platform-neutral message every connector renders, where it goes, and what a platform can show.

The runtime never builds a platform's payload: it says what to say (`Message`) and to whom (`Conversation`); the
shared layer (engine.delivery.render) fills in text fallbacks for what a platform `Capabilities` lacks, and the
connector turns the result into its own wire format. All of these are plain JSON-safe records, because every
outgoing message is journaled in the outbox before it is sent.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What a message is about; Herald's own chat keeps one frame type per kind, other platforms read only the text.
MessageKind = Literal["notification", "reply", "progress", "result", "output"]
MAX_HANDLE_BYTES = 64  # the smallest button payload of any platform (Telegram's callback_data)
MAX_URL = 2048  # a link button's URL (Slack takes 3000; Discord's link buttons 512, which drops longer ones)
MAX_LINK_LABEL = 64


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Conversation(_Record):
    """Where a message goes: a chat on a platform (a room, a channel, a person's direct messages), maybe a thread.

    Never a transport session: a conversation outlives connections, so a reply still reaches the person after a
    reconnect or an engine restart."""

    platform: str
    chat: str
    thread: str | None = None

    @property
    def address(self) -> str:
        return f"{self.platform}:{self.chat}" + (f"/{self.thread}" if self.thread else "")


class Button(_Record):
    """A press-able choice. `handle` is a short server-side id (at most 64 bytes), never the signed binding."""

    handle: str
    label: str
    action: str
    arg: str | None = None


class LinkButton(_Record):
    """A button that opens a web page (an alert's runbook, dashboard, source): an http(s) URL, nothing else, since
    a chat client opens it for whoever taps it (no `javascript:`, `data:`, `file:` or app schemes)."""

    label: str = Field(min_length=1, max_length=MAX_LINK_LABEL)
    url: str = Field(max_length=MAX_URL)

    @field_validator("url")
    @classmethod
    def _web_address(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a link button, or None: an absolute http or https URL with a host, no spaces or control
    characters, and no user name or password in it (a secret would be shown to everyone in the chat)."""
    if len(url) > MAX_URL:
        return f"a link is longer than {MAX_URL} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a link may not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"not a URL: {url[:80]!r}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"a link must be an http or https URL, not {parts.scheme or 'relative'}: {url[:80]!r}"
    if not parts.hostname:
        return f"a link needs a host: {url[:80]!r}"
    if parts.username is not None or parts.password is not None:
        return "a link may not carry a user name or password"
    return None


class Message(_Record):
    """What to say, whatever the platform."""

    kind: MessageKind
    text: str
    title: str | None = None
    severity: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    buttons: tuple[Button, ...] = ()
    links: tuple[LinkButton, ...] = ()
    # The platform message id this answers (a chat client's own frame id, a Telegram message id...), for threading.
    in_reply_to: str | None = None
    # Structured details some platforms show (Herald's chat: run, rule, state, task...); JSON values only.
    meta: dict[str, Any] = Field(default_factory=dict)


class MessageRef(_Record):
    """A sent message, as its platform knows it: enough to edit it later, kept durably in the outbox."""

    platform: str
    chat: str
    id: str
    # How many people or sessions it reached, when the platform can tell (Herald's chat); None: the platform took it.
    recipients: int | None = None


class Capabilities(_Record):
    """What a platform can show; the shared layer falls back to text for what is missing."""

    buttons: bool = True
    edits: bool = True
    threads: bool = False
    formatting: Literal["plain", "markdown", "html"] = "plain"
    max_text: int = Field(default=4096, ge=64)
    max_button_bytes: int = Field(default=MAX_HANDLE_BYTES, ge=8)
    # The shortest time between two edits of one message (platforms rate-limit edits; one a second is within all).
    edit_interval_s: float = Field(default=1.0, ge=0)
    # False for a connector that only answers (the API stream): it is never a notification target.
    notifications: bool = True
    # True where the platform (or its clients) drops a repeat of a message it already has (by the outbox key, as
    # Matrix transaction ids do, or by `seq`, as Herald's chat clients do). Then a message's "sent" mark need not be
    # durable before the next message of its conversation goes out, which saves a commit per message; where it is
    # False, each mark is durable first, so a crash can repeat at most the one message that was in flight.
    dedupes: bool = False
