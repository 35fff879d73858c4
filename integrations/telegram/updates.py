"""One receive path for both transports (polling.py and webhook.py): a Telegram update becomes an `Incoming` for
Herald's intake, and a press is answered with `answerCallbackQuery` (a short toast) once it is durable.

- A message's text goes to the intake as it is, except that a leading `bot_command` entity addressed to this bot
  (`/backup@HeraldBot now`) loses its `@HeraldBot`; a command addressed to another bot in a group is ignored.
- The sender is `telegram:<from.id>`; answers go to `telegram:<chat.id>` (negative for groups).
- The update id is the item's key, so an update delivered twice (a restart before the offset was stored, a
  webhook retried after a lost 200) is one event, journaled once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from engine.plugin import Actor, Busy, Incoming, IntegrationContext, Outcome, ReplyTo
from integrations.telegram.api import BotApi
from integrations.telegram.config import PLATFORM

log = logging.getLogger("herald.telegram")
MAX_TOAST = 200  # answerCallbackQuery's text: 0-200 characters


class Receiver:
    def __init__(self, ctx: IntegrationContext, api: BotApi) -> None:
        self._ctx = ctx
        self._api = api
        self.username: str | None = None  # the bot's @username, from getMe
        self.identified = asyncio.Event()
        self._answers: set[asyncio.Task[None]] = set()

    async def identify(self) -> None:
        """Learn the bot's username (getMe), retrying until Telegram answers."""
        failures = 0
        while True:
            try:
                me = await self._api.call("getMe")
                break
            except Exception as exc:  # noqa: BLE001 - any failure here is retried, with its reason logged
                failures += 1
                log.warning("telegram: getMe failed (%s); retrying", exc)
                await asyncio.sleep(backoff(failures))
        self.username = str(me.get("username") or "")
        log.info("telegram: connected as @%s", self.username)
        self.identified.set()

    async def handle(self, update: dict[str, Any]) -> None:
        """Hand one update to the intake; returns once it is journaled (or refused, or not for Herald). Raises
        Busy when Herald cannot take it now: the caller leaves it unconfirmed, so Telegram delivers it again."""
        item, query = self._incoming(update)
        if item is None:
            if query is not None:  # a press Herald cannot use still stops the client's spinner
                self._later(self._answer_query(query, None))
            return

        async def accepted(outcome: Outcome) -> None:
            if query is not None:
                self._later(self._answer_query(query, f"✓ {_label(query) or 'Received'}"))

        busy: list[Outcome] = []

        async def refused(outcome: Outcome) -> None:
            if outcome.code == "busy":  # not handled: Telegram delivers it again (see below), nobody is told
                busy.append(outcome)
            elif query is not None:
                self._later(self._answer_query(query, outcome.text))
            else:
                self._later(self._reply(outcome.item.reply_to, outcome.text))

        await self._ctx.intake.take([item], accepted=accepted, refused=refused)
        if busy:  # starting, stopping or overloaded: leave the update unconfirmed, to be fetched or posted again
            raise Busy(busy[0].text)

    def _incoming(self, update: dict[str, Any]) -> tuple[Incoming | None, dict[str, Any] | None]:
        key = str(update.get("update_id"))
        query = update.get("callback_query")
        if isinstance(query, dict):
            message, data = query.get("message"), query.get("data")
            if not isinstance(message, dict) or not isinstance(data, str) or "from" not in query:
                return None, query
            return Incoming(_actor(query["from"]), _reply_to(message), button=data, key=key), query
        message = update.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("text"), str) or "from" not in message:
            return None, None  # edits, channel posts, photos, joins: nothing Herald reads
        text = command_for_us(message["text"], message.get("entities") or [], self.username)
        if text is None:
            return None, None
        when = datetime.fromtimestamp(int(message.get("date") or 0), UTC) if message.get("date") else None
        return Incoming(_actor(message["from"]), _reply_to(message), text=text, key=key, when=when), None

    async def _answer_query(self, query: dict[str, Any], text: str | None) -> None:
        body: dict[str, Any] = {"callback_query_id": query["id"]}
        if text:
            body["text"] = text[:MAX_TOAST]
        await self._api.call("answerCallbackQuery", body)

    async def _reply(self, to: ReplyTo, text: str) -> None:
        body: dict[str, Any] = {"chat_id": int(to.chat), "text": text}
        if to.message_id and to.message_id.isdigit():
            body["reply_parameters"] = {"message_id": int(to.message_id), "allow_sending_without_reply": True}
        await self._api.call("sendMessage", body)

    def _later(self, answer: Coroutine[Any, Any, None]) -> None:
        """Answer without holding up the next update (or the webhook's 200); kept, so `close` can cancel it."""
        task = asyncio.create_task(_logged(answer))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def close(self) -> None:
        for task in list(self._answers):
            task.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)


def command_for_us(text: str, entities: list[dict[str, Any]], username: str | None) -> str | None:
    """`text` with a leading `/command@ThisBot` made `/command`; None for a command addressed to another bot."""
    command = next((e for e in entities if isinstance(e, dict) and e.get("type") == "bot_command"
                    and e.get("offset") == 0), None)
    if command is None:
        return text
    units = text.encode("utf-16-le")
    split = 2 * int(command.get("length") or 0)  # entity offsets and lengths count UTF-16 code units
    name, at, bot = units[:split].decode("utf-16-le", "replace").partition("@")
    if not at:
        return text
    if not username or bot.lower() != username.lower():
        return None
    return name + units[split:].decode("utf-16-le", "replace")


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row: 0.5, 1, 2... up to 60."""
    return float(min(60.0, 0.5 * 2 ** (failures - 1)))


def _label(query: dict[str, Any]) -> str | None:
    """The pressed button's label, from the keyboard of the message it sits under."""
    markup = (query.get("message") or {}).get("reply_markup") or {}
    for row in markup.get("inline_keyboard") or []:
        for button in row:
            if button.get("callback_data") == query.get("data"):
                return str(button.get("text"))
    return None


def _actor(user: dict[str, Any]) -> Actor:
    return Actor(platform=PLATFORM, account=str(user["id"]))


def _reply_to(message: dict[str, Any]) -> ReplyTo:
    return ReplyTo(platform=PLATFORM, chat=str(message["chat"]["id"]), message_id=str(message["message_id"]))


async def _logged(answer: Coroutine[Any, Any, None]) -> None:
    try:
        await answer
    except Exception as exc:  # noqa: BLE001 - a lost toast or refusal note is logged, never fatal
        log.warning("telegram: answering an update failed: %s", exc)
