"""Everything that goes out to people: the runtime says what and to whom, this decides where and delivers it.

`notify` resolves an audience (a team's members and targets, or one person) into conversations on the platforms
that have a connector, journals one outbox row per conversation, and reports who could not be reached; `reply`
answers the conversation an event came from (progress of a run becomes edits of one message). Rows are handed to the
platform's sender once durable (engine.delivery.sender). The outcome of every notification is visible: an audit
entry when it was sent or failed, a warning (log, audit, /metrics) when it reached nobody.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.events import ReplyTo
from engine.core.ids import new_id
from engine.delivery.connector import Connector, NamesChats
from engine.delivery.message import Conversation, Message
from engine.delivery.outbox import Outbox, Outgoing
from engine.delivery.outlets import AlertStatus, Audience, Notification, OutMessage, Progress, Result, Text
from engine.delivery.render import following, to_message
from engine.delivery.sender import Delivered, PlatformSender
from engine.delivery.storm import RULE as STORM_RULE
from engine.delivery.storm import Digest, Storms, Turn

log = logging.getLogger("herald.delivery")

HERALD_CHAT = "chat"  # Herald's own chat reaches a person as the conversation "@name" (all their sessions)
PROGRESS_RUNS_KEPT = 10_000

Audit = Callable[..., None]  # (action, actor, **data): an audit entry that rides with the next commit
Accounts = Callable[[str], Awaitable[list[tuple[str, str]]]]  # principal -> (platform, account) it can be reached at


def person_chat(principal: str) -> str:
    return f"@{principal}"


@dataclass(frozen=True)
class Reach:
    """Where a notification went: conversations queued, and addresses no connector can deliver to."""

    queued: tuple[Conversation, ...]
    unreachable: tuple[str, ...]
    digest: str | None = None  # listed in this alert storm digest instead of a message of its own

    def __str__(self) -> str:
        where = ", ".join(sorted({c.platform for c in self.queued}))
        text = f"{len(self.queued)} conversation{'s' if len(self.queued) != 1 else ''}" + (f" on {where}" if where
                                                                                           else "")
        if self.digest is not None:
            text = f"in the alert storm digest, {text}"
        return text + (f"; unreachable: {', '.join(self.unreachable)}" if self.unreachable else "")


class Delivery:
    def __init__(self, outbox: Outbox, *, accounts: Accounts, audit: Audit, storms: Storms | None = None) -> None:
        self.outbox = outbox
        self.storms = storms  # None: every alert notification goes out on its own
        self._accounts = accounts
        self._audit = audit
        self._senders: dict[str, PlatformSender] = {}
        self._progress_runs: OrderedDict[str, None] = OrderedDict()
        self._started = False
        self._resuming: set[asyncio.Future[None]] = set()
        self.counts: Counter[tuple[str, str]] = Counter()  # (platform, outcome) -> messages, for /metrics
        self.unreached = 0  # notifications that reached nobody

    # -- connectors --------------------------------------------------------------------------------------------

    def register(self, connector: Connector) -> Callable[[], Awaitable[None]]:
        """Deliver through `connector` from now on; returns the coroutine function that detaches it."""
        platform = connector.platform
        if platform in self._senders:
            raise ValueError(f"a connector for platform {platform!r} is already registered")
        sender = self._senders[platform] = PlatformSender(connector, self.outbox, on_done=self._delivered)
        if self._started:  # a connector loaded after start (a reload): resume what waits for it
            resuming = asyncio.ensure_future(self._resume(platform))
            self._resuming.add(resuming)  # kept until done, so it is neither lost nor collected mid-way
            resuming.add_done_callback(self._resuming.discard)

        async def detach() -> None:
            if self._senders.get(platform) is sender:
                del self._senders[platform]
            await sender.close()

        return detach

    def connector(self, platform: str) -> Connector | None:
        sender = self._senders.get(platform)
        return sender.connector if sender else None

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset(self._senders)

    def waiting(self) -> dict[str, int]:
        return {platform: sender.waiting for platform, sender in self._senders.items()}

    async def start(self) -> None:
        """Send what a stop or crash left unconfirmed, in outbox order (call once the connectors are registered)."""
        self._started = True
        await self._resume(None)
        if self.storms is not None:
            await self.storms.start(self._edit_digest)

    async def close(self) -> None:
        if self.storms is not None:
            await self.storms.close()
        for sender in list(self._senders.values()):
            await sender.close()

    async def _resume(self, platform: str | None) -> None:
        pending = await self.outbox.pending()
        by_platform: dict[str, list[Outgoing]] = {}
        for item in pending:
            if platform is None or item.to.platform == platform:
                by_platform.setdefault(item.to.platform, []).append(item)
        for name, items in by_platform.items():
            sender = self._senders.get(name)
            if sender is None:
                log.warning("%d messages wait for platform %s, which has no connector loaded", len(items), name)
            else:
                log.info("resuming %d unconfirmed messages to %s", len(items), name)
                sender.offer(items)

    # -- what the runtime calls ----------------------------------------------------------------------------------

    async def notify(self, audience: Audience, message: Notification | OutMessage, *, key: str | None = None) -> Reach:
        """Queue `message` for every conversation of `audience`; durable when this returns. An alert notification
        during an alert storm becomes a line of the audience's digest message instead (engine.delivery.storm)."""
        base = key or new_id()
        if self.storms is not None and isinstance(message, Notification) and message.alert is not None:
            turn = self.storms.admit(audience.team, base)
            if turn is not None:
                return await self._into_digest(turn, audience, message, base)
        named, unreachable = await self._resolve(audience)
        conversations = list(named.values())
        body = to_message(message)
        # The key names the conversation as the team did, so a replayed run repeats it even if the chat's id was
        # resolved differently in between (a room alias the homeserver could not be asked about the first time).
        items = [Outgoing(key=f"{base}/{address}", to=c, message=body) for address, c in named.items()]
        await self._put(items, wait=True)
        reach = Reach(tuple(conversations), tuple(unreachable))
        if isinstance(message, Notification) and not conversations:
            self.unreached += 1
            log.warning("notification of %s to %s reached nobody (%s)", message.rule, audience.team,
                        ", ".join(unreachable) or "the team has no members or targets")
            self._audit("notification.unreachable", "system", rule=message.rule, event=message.event_id,
                        team=audience.team, unreachable=list(unreachable))
        return reach

    async def reply(self, to: ReplyTo | None, message: OutMessage, *, key: str | None = None) -> bool:
        """Answer the conversation `to`; False when no connector can deliver there."""
        if to is None:
            return False
        if to.platform not in self._senders:
            log.warning("no connector for platform %s; reply dropped", to.platform)
            return False
        conversation = Conversation(platform=to.platform, chat=to.chat, thread=to.thread)
        body = to_message(message, in_reply_to=to.message_id)
        if isinstance(message, Progress):
            # One message per run, edited as it moves on; each state has a key of its own, so a replay repeats none.
            target = f"progress/{message.run_id}"
            state_key = f"{target}/{message.state}/{_digest(message.detail)}"
            first = message.run_id not in self._progress_runs
            self._progress_runs[message.run_id] = None
            if len(self._progress_runs) > PROGRESS_RUNS_KEPT:
                self._progress_runs.popitem(last=False)
            item = Outgoing(key=target if first else state_key, to=conversation, message=body,
                            op="send" if first else "edit", target=None if first else target)
        else:
            item = Outgoing(key=key or _reply_key(to, message, body), to=conversation, message=body)
        await self._put([item], wait=False)  # a run does not wait for its progress to be durable; the sender does
        return True

    async def follow(self, fingerprint: str, status: AlertStatus, *, reshow: bool = False) -> int:
        """Edit every notification about alert `fingerprint`, on every platform, to show `status` (acknowledged,
        muted, resolved...) with only the buttons that still apply. Edits of one message are coalesced by the
        senders (only the newest state waits out a platform's edit interval); a state already shown is not edited
        again. `reshow`: the status lost something the messages show (a mute ended early, in Alertmanager), so a
        message is edited even back to how it was first sent. Returns how many messages will be edited."""
        if self.storms is not None:
            self.storms.follow(fingerprint, digest_mark(status), resolved=status.resolved_at is not None)
        edits, notifications = [], await self.outbox.notifications_of_alert(fingerprint)
        for sent in notifications:
            body = following(sent.message, status)
            if body is sent.message and not reshow:
                continue
            state = _digest(body.text + "|" + ",".join(b.handle for b in body.buttons))
            edits.append(Outgoing(key=f"{sent.key}/state/{state}", to=sent.to, message=body, op="edit",
                                  target=sent.key))
        await self._put(edits, wait=True)
        if status.resolved_at is not None and notifications:  # no write for an alert nobody was told of
            await self.outbox.close_alert(fingerprint)
        return len(edits)

    async def _into_digest(self, turn: Turn, audience: Audience, message: Notification, key: str) -> Reach:
        digest = turn.digest
        unreachable: list[str] = []
        if turn.new:  # the storm's first overflow: its digest goes to the audience's conversations as they are now
            digest.conversations, unreachable = await self._resolve(audience)
            if not digest.conversations:
                self.unreached += 1
                log.warning("the alert storm digest for %s reaches nobody (%s)", audience.team,
                            ", ".join(unreachable) or "the team has no members or targets")
                self._audit("notification.unreachable", "system", rule=message.rule, event=message.event_id,
                            team=audience.team, unreachable=list(unreachable), digest=digest.id)
        if not turn.listed:
            assert self.storms is not None  # a turn comes from it
            listed = self.storms.add(turn, key=key, fingerprint=message.alert,
                                     line=message.line or message.text.split("\n", 1)[0][:120])
            if turn.new:
                await self._put([Outgoing(key=digest.message_key(address), to=c, message=self._digest_body(digest, c))
                                 for address, c in digest.conversations.items()], wait=True)
            await listed
            self._audit("notification.digested", "system", rule=message.rule, event=message.event_id,
                        team=audience.team, digest=digest.id, alert=message.alert)
        return Reach(tuple(digest.conversations.values()), tuple(unreachable), digest=digest.id)

    async def _edit_digest(self, digest: Digest) -> None:
        """Re-render a digest in each of its conversations (an edit through the outbox; the senders coalesce)."""
        edits = []
        for address, conversation in digest.conversations.items():
            body = self._digest_body(digest, conversation)
            target = digest.message_key(address)
            edits.append(Outgoing(key=f"{target}/{_digest(body.text)}", to=conversation, message=body, op="edit",
                                  target=target))
        await self._put(edits, wait=True)

    def _digest_body(self, digest: Digest, to: Conversation) -> Message:
        """The digest as `to`'s platform can show it: whole lines, and an honest count of those left out."""
        sender = self._senders.get(to.platform)
        text = digest.text(sender.connector.capabilities.max_text if sender else None)
        return Message(kind="notification", text=text, meta={"rule": STORM_RULE, "storm": digest.id,
                                                             "team": digest.team})

    async def _put(self, items: Sequence[Outgoing], *, wait: bool) -> None:
        """Journal `items`; each goes to its platform's sender once durable (commits complete in order, so rows
        reach the senders in outbox order). `wait`: return only once durable."""
        if not items:
            return
        stored = self.outbox.put(items)
        stored.add_done_callback(self._offer)
        if wait:
            await stored

    def _offer(self, stored: asyncio.Future[list[Outgoing]]) -> None:
        if stored.cancelled():  # the engine stopped first: the run that said it is replayed at start
            return
        if stored.exception() is not None:
            log.error("journaling outgoing messages failed: %s", stored.exception())
            return
        by_platform: dict[str, list[Outgoing]] = {}
        for item in stored.result():
            by_platform.setdefault(item.to.platform, []).append(item)
        for platform, rows in by_platform.items():
            sender = self._senders.get(platform)
            if sender is not None:
                sender.offer(rows)

    async def _resolve(self, audience: Audience) -> tuple[dict[str, Conversation], list[str]]:
        """The audience's conversations (by the address that named each) and who cannot be reached."""
        conversations: dict[str, Conversation] = {}
        chats: set[str] = set()  # each chat once, however many addresses name it
        unreachable: list[str] = []

        def add(conversation: Conversation, named: str | None = None) -> None:
            sender = self._senders.get(conversation.platform)
            if sender is not None and sender.connector.capabilities.notifications:
                if conversation.address not in chats:
                    chats.add(conversation.address)
                    conversations.setdefault(named or conversation.address, conversation)
            else:
                unreachable.append(conversation.address)

        for target in audience.targets:
            add(await self._chat_id(target), target.address)
        # Only ask where people can be reached (a database read) when some platform besides Herald's chat could.
        others = any(p != HERALD_CHAT and s.connector.capabilities.notifications for p, s in self._senders.items())
        for principal in audience.members:
            found = False
            if HERALD_CHAT in self._senders:
                add(Conversation.model_construct(platform=HERALD_CHAT, chat=person_chat(principal)))
                found = True
            for platform, account in (await self._accounts(principal) if others else ()):
                sender = self._senders.get(platform)
                if platform != HERALD_CHAT and sender is not None and sender.connector.capabilities.notifications:
                    add(Conversation(platform=platform, chat=account))
                    found = True
            if not found:
                unreachable.append(f"@{principal}")
        return conversations, sorted(set(unreachable))

    async def _chat_id(self, to: Conversation) -> Conversation:
        """`to` named by its chat's own id, where its connector knows chats by several names (NamesChats)."""
        sender = self._senders.get(to.platform)
        if sender is None or not isinstance(sender.connector, NamesChats):
            return to
        chat = await sender.connector.chat_id(to.chat)
        return to if chat == to.chat else Conversation(platform=to.platform, chat=chat, thread=to.thread)

    async def _delivered(self, done: Delivered) -> None:
        item = done.item
        self.counts[(item.to.platform, done.outcome)] += 1
        if item.message.kind != "notification" or item.op == "edit":  # an alert's later state is not news
            if done.outcome == "failed":
                self._audit("reply.failed" if item.op == "send" else "edit.failed", "system",
                            platform=item.to.platform, chat=item.to.chat, error=done.error)
            return
        data: dict[str, Any] = {"platform": item.to.platform, "chat": item.to.chat,
                                "event": item.message.meta.get("event"), "rule": item.message.meta.get("rule")}
        if item.message.meta.get("alert"):  # so an alert's history lists where it was sent
            data["alert"] = item.message.meta["alert"]
        if "storm" in item.message.meta:
            data["digest"] = item.message.meta["storm"]
        if done.outcome == "failed":
            self._audit("notification.failed", "system", **data, error=done.error)
        elif done.outcome == "sent" and done.ref is not None and done.ref.recipients == 0:
            self.unreached += 1
            log.warning("notification %s to %s reached no connected session; it waits for a reconnect", item.key,
                        item.to.address)
            self._audit("notification.unheard", "system", **data,
                        reason="nobody connected; delivered when a client reconnects")
        elif done.outcome == "sent":
            self._audit("notification.sent", "system", **data, recipients=done.ref.recipients if done.ref else None)


def digest_mark(status: AlertStatus) -> str:
    """What an alert's line in a storm digest adds once the alert moves on (` — ✅ acknowledged by alice · ⏫ escalated
    to managers`, ` — ✔ resolved`)."""
    if status.resolved_at is not None:
        return " — ✔ resolved"
    parts = []
    if status.acknowledged_by:
        parts.append(f"✅ acknowledged by {status.acknowledged_by}")
    elif status.unacknowledged_by:  # open again: said, so the line does not just lose its acknowledgement
        parts.append(f"↩ unacknowledged by {status.unacknowledged_by}")
    if status.muted_until is not None:
        parts.append(f"🔕 muted until {status.muted_until:%H:%M} UTC")
    if status.escalations:
        parts.append("⏫ escalated to " + ", ".join(step.target for step in status.escalations))
    return " — " + " · ".join(parts) if parts else ""


def _reply_key(to: ReplyTo, message: OutMessage, body: Message) -> str:
    """A key that makes a replayed answer the same row (so it is not sent twice), where the answer is determined by
    what it answers; task output is not replayed, so each batch of lines is a row of its own."""
    if isinstance(message, Result):
        return f"result/{message.run_id}"
    if isinstance(message, Text) and to.message_id:
        return f"reply/{to.platform}/{to.chat}/{to.message_id}/{_digest(body.text)}"
    return new_id()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
