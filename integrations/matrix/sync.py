"""Receiving from Matrix: `/sync` long polling, invites joined, messages and reactions handed to Herald's intake.

Durability: the `next_batch` token is stored only after every event of that batch was handed to the intake (and so
journaled), and each event carries its `event_id` as the intake key. A restart between the two repeats the batch,
and the intake knows its events; a restart after them continues where the last batch ended. Nothing is lost, nothing
is handled twice.

The first sync of a new installation (no token yet) only takes the bot's bearings: it joins pending invites but
does not answer the history it finds in the rooms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from nio import MegolmEvent, RoomMessagesResponse, SyncResponse

from engine.plugin import Actor, DeliveryError, Incoming, IntegrationContext, Outcome, ReplyTo
from integrations.matrix import content
from integrations.matrix.connector import PLATFORM, MatrixConnector
from integrations.matrix.session import LoginFailed, Session

log = logging.getLogger("herald.matrix")
ENCRYPTED_OFF_TEXT = ("Herald cannot read this room: it is end-to-end encrypted and Herald's Matrix encryption is "
                      "off (encryption = false in [integrations.matrix]). Use an unencrypted room, or turn it on.")
BUSY_RETRY_S = 1.0
TIMELINE_LIMIT = 50  # events per room in one sync; more is a "limited" timeline, whose gap is fetched page by page
MAX_GAP_PAGES = 20
UNDECRYPTABLE_TEXT = "Herald could not decrypt a message here (no key for it yet); please send it again."


class Receiver:
    def __init__(self, ctx: IntegrationContext, session: Session, connector: MatrixConnector, *,
                 timeout_s: float, encryption: bool, on_start: Callable[[], Awaitable[None]] | None = None,
                 after_sync: Callable[[], Awaitable[None]] | None = None) -> None:
        self._ctx = ctx
        self._session = session
        self._connector = connector
        self._store = ctx.store(PLATFORM)
        self._timeout_ms = int(timeout_s * 1000)
        self._encryption = encryption
        self._on_start = on_start  # once logged in (or refused), before the first sync: room aliases resolved
        self._after_sync = after_sync  # E2EE upkeep (keys, to-device messages) after each sync

    async def run(self) -> None:
        try:
            await self._session.start()
        except LoginFailed as exc:
            log.error("matrix: %s; fix [integrations.matrix] and restart Herald (nothing is sent or received)", exc)
            if self._on_start is not None:
                await self._on_start()  # nothing can be resolved: no notification waits for it any longer
            return
        if self._on_start is not None:
            await self._on_start()
        token = await self._store.get("next_batch")
        failures = stalls = 0
        while True:
            try:
                answer = await self._session.client.sync(timeout=0 if token is None else self._timeout_ms,
                                                         since=token, sync_filter=_sync_filter())
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                log.warning("matrix: /sync failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(10.0, 0.2 * 2 ** failures))
                continue
            if not isinstance(answer, SyncResponse):
                failures += 1
                wait = (answer.retry_after_ms or 0) / 1000 or min(10.0, 0.2 * 2 ** failures)
                log.warning("matrix: /sync refused (%s %s); retrying in %.1fs", answer.status_code, answer.message,
                            wait)
                await asyncio.sleep(wait)
                continue
            failures = 0
            if not await self._handle(answer, since=token):
                stalls += 1  # Herald is starting or overloaded: the same batch again, later
                await asyncio.sleep(min(30.0, BUSY_RETRY_S * 2 ** (stalls - 1)))
                continue
            stalls = 0
            token = answer.next_batch
            await self._store.put("next_batch", token)  # only now: everything before it is with the intake
            if self._after_sync is not None:
                try:
                    await self._after_sync()
                except Exception:  # keys are uploaded or shared again after the next sync
                    log.exception("matrix: encryption upkeep failed")

    async def _handle(self, sync: SyncResponse, *, since: str | None) -> bool:
        """Hand a batch on; False when Herald was too busy to take some of it, or a gap could not be fetched (the
        batch is to be fetched again: what was taken is known to the intake by its event ids, never handled twice).
        `since` is None on a new installation's first sync, which only takes the bot's bearings."""
        for room_id, invite in sync.rooms.invite.items():
            await self._consider_invite(room_id, invite.invite_state)
        items: list[Incoming] = []
        for room_id, info in sync.rooms.join.items():
            await self._check_encryption(room_id, info.timeline.events)
            if since is None:
                continue
            events = info.timeline.events
            # Just joined, with the invite out of this batch: what was said between the two is fetched (back to the
            # invite). A limited timeline: what it left out since the last batch is fetched.
            joining = self._membership_in(events, "join") and not self._membership_in(events, "invite")
            if (joining or info.timeline.limited) and info.timeline.prev_batch:
                earlier = await self._fetch_back(room_id, info.timeline.prev_batch, since=None if joining else since)
                if earlier is None:
                    return False
                events = earlier + events
            for event in self._since_joined(events):
                item = await self._incoming(room_id, event)
                if item is not None:
                    items.append(item)
        busy: list[Outcome] = []

        async def refused(outcome: Outcome) -> None:
            if outcome.code == "busy":
                busy.append(outcome)
            else:
                await self._refused(outcome)

        if items:
            try:
                await self._ctx.intake.take(items, refused=refused)
            except Exception:  # the batch is fetched again: nothing is lost, and what was journaled is known
                log.exception("matrix: handing %d events to the intake failed", len(items))
                return False
        return not busy

    async def _fetch_back(self, room_id: str, start: str, *, since: str | None) -> list[Any] | None:
        """The room's events before a batch (`GET /rooms/{room}/messages` from its `prev_batch`), oldest first:
        back to `since` (the last batch), or with none, back to the bot's invite. None if they cannot be had now."""
        found: list[Any] = []
        for _ in range(MAX_GAP_PAGES):
            try:
                answer = await self._session.client.room_messages(room_id, start=start, end=since, limit=100)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("matrix: could not fetch the missed events of %s (%s)", room_id, type(exc).__name__)
                return None
            if not isinstance(answer, RoomMessagesResponse):
                log.warning("matrix: could not fetch the missed events of %s: %s", room_id, answer)
                return None
            found[:0] = reversed(answer.chunk)
            reached_invite = since is None and self._membership_in(answer.chunk, "invite")
            if reached_invite or not answer.chunk or not answer.end or answer.end == start:
                return found
            start = answer.end
        log.warning("matrix: more than %d pages were missed in %s; the oldest are skipped", MAX_GAP_PAGES, room_id)
        return found

    def _membership_in(self, events: list[Any], membership: str) -> bool:
        return any(self._is_membership(e, membership) for e in events)

    def _is_membership(self, event: Any, membership: str) -> bool:
        source = getattr(event, "source", {}) or {}
        return (source.get("type") == "m.room.member" and source.get("state_key") == self._session.user_id
                and (source.get("content") or {}).get("membership") == membership)

    def _since_joined(self, events: list[Any]) -> list[Any]:
        """The events since the bot was invited (or, when the invite is not at hand, since it joined), when these
        events have them: a room's history from before the bot was asked in is not answered, but what was said
        after the invite, while it was joining, is."""
        for wanted in ("invite", "join"):
            for n in range(len(events) - 1, -1, -1):
                if self._is_membership(events[n], wanted):
                    return events[n + 1:]
        return events

    async def _consider_invite(self, room_id: str, state: list[Any]) -> None:
        """Join a room when someone Herald knows (a configured or linked account) invited the bot."""
        me = self._session.user_id
        inviter = next((e.sender for e in state if getattr(e, "state_key", None) == me
                        and getattr(e, "membership", None) == "invite"), None)
        if inviter is None:
            return
        if await self._ctx.directory.resolve(PLATFORM, inviter) is None:
            log.warning("matrix: not joining %s: invited by %s, who is no principal's account", room_id, inviter)
            return
        answer = await self._session.client.join(room_id)
        log.info("matrix: joined %s (invited by %s): %s", room_id, inviter, type(answer).__name__)

    async def _incoming(self, room_id: str, event: Any) -> Incoming | None:
        source: dict[str, Any] = getattr(event, "source", {}) or {}
        sender = source.get("sender")
        if sender == self._session.user_id or not isinstance(sender, str):
            return None  # the bot's own messages come back through /sync too
        if isinstance(event, MegolmEvent):  # encrypted, and not decrypted (encryption off, or no key)
            event = self._decrypted(event)
            if event is None:
                await self._notify_unreadable(room_id, str(source.get("event_id", "")))
                return None
            source = event.source
        body = source.get("content") or {}
        if source.get("type") == "m.room.encrypted" and not self._encryption:
            await self._notify_unreadable(room_id, source.get("event_id", ""))
            return None
        event_type = source.get("type")  # a decrypted event's source is its plaintext: its own type, in clear
        relation = body.get("m.relates_to") or {}
        actor = Actor(platform=PLATFORM, account=sender)
        event_id = str(source.get("event_id"))
        when = datetime.fromtimestamp(int(source.get("origin_server_ts", 0)) / 1000, UTC)
        reply_to = ReplyTo(platform=PLATFORM, chat=room_id, message_id=event_id)
        if event_type == "m.reaction" and relation.get("rel_type") == "m.annotation":
            handle = await self._connector.reaction_handle(str(relation.get("event_id")), str(relation.get("key")))
            if handle is None:
                return None
            return Incoming(actor, reply_to, button=handle, key=event_id, when=when)
        if event_type != "m.room.message" or body.get("msgtype") != "m.text":
            return None  # notices (other bots), images, state...
        if relation.get("rel_type") == "m.replace" or not isinstance(body.get("body"), str):
            return None  # an edit of something already handled
        return Incoming(actor, reply_to, text=content.command_text(body["body"]), key=event_id, when=when)

    def _decrypted(self, event: MegolmEvent) -> Any:
        """nio decrypts as it syncs; a batch fetched again (after Herald was busy) is decrypted here."""
        if self._session.client.olm is None:
            return None
        try:
            return self._session.client.decrypt_event(event)
        except Exception:  # nio raises EncryptionError (no session key yet) and others
            return None

    async def _refused(self, outcome: Outcome) -> None:
        reply = outcome.item.reply_to
        message = content.notice_for(outcome.text, in_reply_to=reply.message_id)
        await self._notice(reply.chat, message, txn=f"refused-{outcome.item.key or reply.message_id}")

    async def _check_encryption(self, room_id: str, events: list[Any]) -> None:
        room = self._session.client.rooms.get(room_id)
        encrypted = bool(room is not None and room.encrypted) or any(
            getattr(e, "source", {}).get("type") == "m.room.encryption" for e in events)
        if encrypted and not self._encryption:
            await self._notify_unreadable(room_id, "")

    async def _notify_unreadable(self, room_id: str, event_id: str) -> None:
        """Say once per room, in the room and in the log, that Herald cannot read it (never a silent failure)."""
        if self._encryption:
            log.warning("matrix: could not decrypt %s in %s", event_id, room_id)
            await self._notice(room_id, content.notice_for(UNDECRYPTABLE_TEXT, in_reply_to=event_id or None),
                               txn=f"undecryptable-{event_id}")
            return
        if await self._store.get(f"encrypted-warned:{room_id}"):
            return
        log.warning("matrix: room %s is end-to-end encrypted but encryption is off in [integrations.matrix]; "
                    "Herald cannot read it", room_id)
        await self._notice(room_id, content.notice_for(ENCRYPTED_OFF_TEXT), txn=f"encrypted-off-{room_id}")
        await self._store.put(f"encrypted-warned:{room_id}", "1")

    async def _notice(self, room_id: str, body: dict[str, Any], *, txn: str) -> None:
        try:
            await self._connector.put(room_id, "m.room.message", body, txn=txn)
        except DeliveryError as exc:  # an answer is not worth stopping the sync for
            log.warning("matrix: could not answer in %s: %s", room_id, exc)


def _sync_filter() -> dict[str, Any]:
    return {"room": {"timeline": {"limit": TIMELINE_LIMIT}}, "presence": {"not_types": ["*"]}}
