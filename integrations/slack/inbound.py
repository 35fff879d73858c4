"""What people do on Slack, as Herald's intake items; one path for Socket Mode and HTTP mode.

Each payload kind has a stable id of its own, used as the Incoming `key` (and remembered in the store for a day),
so a payload Slack sends again (an envelope not acknowledged before a socket dropped, an HTTP event retried after a
timeout) is the same event, handled once:

- events_api message / app_mention: the message's channel and `ts` (not the `event_id`: a message that mentions the
  bot arrives as both a `message` and an `app_mention` event, with two event ids, and must be one event);
- slash_commands: the `trigger_id` (a slash command payload has no other id; Slack re-sends the same payload);
- interactive block_actions: the `trigger_id` too (a button may be pressed several times, each with its own).

`handle` returns once the item is journaled (or refused, with the person told why): only then may the transport
acknowledge it to Slack.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

from engine.plugin import Actor, Incoming, IntegrationContext, KeyValue, Outcome, ReplyTo
from integrations.slack.connector import COMMAND_PREFIX, PLATFORM, RESPONSE_URL_TTL_S, response_url_key
from integrations.slack.web import SlackWeb, post_response

log = logging.getLogger("herald.slack")

SEEN_TTL_S = 24 * 3600
DONE = "done"
_LEADING_MENTION = re.compile(r"^\s*<@([UW][A-Z0-9]+)(\|[^>]*)?>\s*")
HERALD_COMMAND = "/herald"  # `/herald link TOKEN` is `/link TOKEN`: one slash command reaches every Herald command


class Inbound:
    def __init__(self, ctx: IntegrationContext, web: SlackWeb, store: KeyValue) -> None:
        self._ctx = ctx
        self._web = web
        self._store = store
        self.handled = 0
        self._busy: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> its lock, and how many hold or await it

    async def handle(self, kind: str, payload: dict[str, Any]) -> None:
        """One payload of type `kind` (slash_commands, interactive, events_api)."""
        read = {"slash_commands": self._command, "interactive": self._press, "events_api": self._event}.get(kind)
        parsed = read(payload) if read is not None else None
        if parsed is None:
            return
        key = parsed[0].key
        assert key is not None
        # A retry that arrives while the first delivery is still being handled (HTTP mode) waits for it.
        lock, waiting = self._busy.get(key, (asyncio.Lock(), 0))
        self._busy[key] = (lock, waiting + 1)
        try:
            async with lock:
                await self._handle_once(key, *parsed)
        finally:
            lock, waiting = self._busy[key]
            if waiting == 1:
                del self._busy[key]
            else:
                self._busy[key] = (lock, waiting - 1)

    async def _handle_once(self, key: str, item: Incoming, response_url: str | None) -> None:
        seen_key = f"seen:{key}"
        seen = await self._store.get(seen_key)
        if seen == DONE:
            log.info("slack: %s delivered again; already handled", item.key)
            return
        if item.when is None:  # the first sighting's time, so a re-delivery derives the same event id
            when = datetime.fromisoformat(seen) if seen else datetime.now(UTC)
            if not seen:
                await self._store.put(seen_key, when.isoformat(), ttl_s=SEEN_TTL_S)
            item = Incoming(item.actor, item.reply_to, text=item.text, button=item.button, key=key, when=when)
        if response_url is not None and item.text is not None:
            await self._store.put(response_url_key(key.removeprefix(COMMAND_PREFIX)), response_url,
                                  ttl_s=RESPONSE_URL_TTL_S)

        async def refused(outcome: Outcome) -> None:
            await self._tell(outcome, response_url)

        await self._ctx.intake.take([item], refused=refused)
        await self._store.put(seen_key, DONE, ttl_s=SEEN_TTL_S)
        self.handled += 1

    # -- payload kinds -------------------------------------------------------------------------------------------

    def _command(self, p: dict[str, Any]) -> tuple[Incoming, str | None] | None:
        command, text, trigger = str(p.get("command") or ""), str(p.get("text") or "").strip(), p.get("trigger_id")
        if not command or not trigger or not p.get("user_id") or not p.get("channel_id"):
            return None
        if command == HERALD_COMMAND:
            line = "/" + (text or "help")
        else:
            line = f"{command} {text}" if text else command
        key = COMMAND_PREFIX + str(trigger)
        reply_to = ReplyTo(platform=PLATFORM, chat=str(p["channel_id"]), message_id=key)
        return Incoming(_actor(p["user_id"]), reply_to, text=line, key=key), p.get("response_url")

    def _press(self, p: dict[str, Any]) -> tuple[Incoming, str | None] | None:
        if p.get("type") != "block_actions" or not p.get("actions") or not p.get("trigger_id"):
            return None
        action = p["actions"][0]
        handle = action.get("value") or action.get("action_id")
        if not handle or str(action.get("action_id", "")).startswith("link-"):
            return None  # a link button: the browser opened it, there is nothing for Herald to do
        channel = (p.get("channel") or {}).get("id") or (p.get("container") or {}).get("channel_id")
        ts = (p.get("message") or {}).get("ts") or (p.get("container") or {}).get("message_ts")
        if not channel or not (p.get("user") or {}).get("id"):
            return None
        reply_to = ReplyTo(platform=PLATFORM, chat=str(channel), message_id=str(ts) if ts else None)
        item = Incoming(_actor(p["user"]["id"]), reply_to, button=str(handle), key=f"press:{p['trigger_id']}")
        return item, p.get("response_url")

    def _event(self, p: dict[str, Any]) -> tuple[Incoming, str | None] | None:
        event = p.get("event") or {}
        if p.get("type") != "event_callback" or event.get("type") not in ("message", "app_mention"):
            return None
        if event.get("subtype") or event.get("bot_id") or not event.get("user") or not event.get("ts"):
            return None  # edits, joins, and bots (this one included) are not people talking
        bot = _bot_user(p)
        if event["user"] == bot:
            return None
        text = str(event.get("text") or "")
        mention = _LEADING_MENTION.match(text)
        if mention and (event["type"] == "app_mention" or mention.group(1) == bot):
            text = text[mention.end():]  # "@herald /backup now" is "/backup now"
        if not text.strip():
            return None
        channel, ts = str(event.get("channel") or ""), str(event["ts"])
        reply_to = ReplyTo(platform=PLATFORM, chat=channel, message_id=ts)
        when = datetime.fromtimestamp(float(ts), UTC)
        return Incoming(_actor(event["user"]), reply_to, text=text, key=f"msg:{channel}:{ts}", when=when), None

    # -- answers -------------------------------------------------------------------------------------------------

    async def _tell(self, outcome: Outcome, response_url: str | None) -> None:
        """Show a refusal only to the person it is for."""
        body = {"response_type": "ephemeral", "replace_original": False, "text": outcome.text}
        try:
            if response_url is not None and await post_response(self._ctx.http, response_url, body):
                return
            await self._web.call("chat.postEphemeral", {"channel": outcome.item.reply_to.chat,
                                                        "user": outcome.item.actor.account, "text": outcome.text},
                                 answers=True)
        except Exception as exc:  # the item itself is settled; a lost answer must not stop the transport
            log.warning("slack: could not tell %s why it was refused: %s", outcome.item.actor.account, exc)


def _actor(user: object) -> Actor:
    return Actor(platform=PLATFORM, account=str(user))


def _bot_user(p: dict[str, Any]) -> str | None:
    for authorization in p.get("authorizations") or ():
        if authorization.get("is_bot"):
            return str(authorization.get("user_id"))
    return None
