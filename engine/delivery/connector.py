"""The connector interface: the few things a chat platform must do itself; everything else is shared.

A connector declares its platform and `Capabilities` and implements:

- `parse_address(text)`: check an address written in the config or a rule file (`team ops = slack "C012AB3CD"`)
  and return its canonical form, or raise `AddressError` with a message the compiler shows at `file:line:col`;
- `send(to, message, key=, seq=)`: deliver a neutral message, return a durable `MessageRef`; `key` is the outbox's
  idempotency key, which a platform that deduplicates (Matrix transaction ids, Discord nonces) should pass on;
- `edit(ref, message, key=, seq=)`: replace a sent message's content (only called when `capabilities.edits`).

A connector whose addresses may name a chat otherwise than by its id (a Matrix room alias) also implements
`NamesChats.chat_id`, so that Herald keeps every conversation under the one name its replies come from.

Delivery failures are classified by the exception a connector raises, so the shared senders decide what to do:

    DeliveryError            (engine.core.errors.HeraldError)
    ├── RateLimited          the platform said "slow down" (HTTP 429 with retry_after / Retry-After): wait, retry
    ├── Unavailable          5xx, a timeout, a dropped connection: retry with backoff and jitter
    └── Rejected             the platform refused this message for good (unknown chat, no permission): give up

Any other exception is treated as `Unavailable` (retried), and logged with its traceback, because it is a bug.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.core.errors import HeraldError
from engine.delivery.message import Capabilities, Conversation, Message, MessageRef


class DeliveryError(HeraldError):
    """A message could not be delivered right now or at all."""


class RateLimited(DeliveryError):
    def __init__(self, retry_after_s: float, message: str = "rate limited") -> None:
        super().__init__(f"{message} (retry after {retry_after_s:g}s)")
        self.retry_after_s = max(0.0, float(retry_after_s))


class Unavailable(DeliveryError):
    """Worth retrying: the platform or the network failed, not the message."""


class Rejected(DeliveryError):
    """Not worth retrying: the platform refused this message."""


class AddressError(ValueError):
    """An address a platform cannot use; the message says what a valid one looks like."""


@runtime_checkable
class Connector(Protocol):
    platform: str
    capabilities: Capabilities

    def parse_address(self, text: str) -> str:
        """The canonical form of a chat address on this platform; AddressError if it cannot be one."""
        ...

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        """Deliver `message`; `seq` is the outbox's increasing order number (a catch-up cursor, if useful)."""
        ...

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        ...


@runtime_checkable
class NamesChats(Protocol):
    """Optional, for a platform where one chat has several addresses (Matrix: `#ops:server` and `!id:server`)."""

    async def chat_id(self, chat: str) -> str:
        """The chat's own id for the address `chat` (as replies from it carry), so that what Herald keeps per
        conversation (the outbox, numbered choices, who a notification reached) names it one way. `chat` itself
        when it is an id already, or cannot be resolved now: the send then resolves it, or fails saying why."""
        ...
