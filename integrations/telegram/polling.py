"""Long polling (the default): Herald asks Telegram for updates, so nothing needs to reach it from outside.

`getUpdates` with `offset` = the last handled `update_id` + 1 confirms everything before it, and Telegram forgets
it. The offset is stored in the integration's store only after the update is journaled (or refused), so a crash
in between re-delivers it, and its key makes it the same event: a restart neither loses nor repeats an update.

A bot with a webhook cannot be polled, so a webhook left by a former webhook-mode setup is deleted first (its
pending updates are kept). A 409 Conflict (another process polls with this token, or someone set a webhook) is
reported, and polling retried with backoff: the other poller may be a deploy's old instance about to stop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.plugin import Busy, IntegrationContext, KeyValue
from integrations.telegram.api import BotApi, Conflict
from integrations.telegram.updates import Receiver, backoff

log = logging.getLogger("herald.telegram")
ALLOWED_UPDATES = ["message", "callback_query"]
OFFSET = "offset"


class Poller:
    def __init__(self, ctx: IntegrationContext, api: BotApi, receiver: Receiver, timeout_s: int) -> None:
        self._store: KeyValue = ctx.store("telegram")
        self._api = api
        self._receiver = receiver
        self._timeout_s = timeout_s
        self.conflicts = 0  # 409s seen, for whoever watches (and the tests)

    async def run(self) -> None:
        await self._receiver.identify()
        await self._without_webhook()
        offset = int(await self._store.get(OFFSET) or 0)
        failures = 0
        while True:
            try:
                updates = await self._api.call(
                    "getUpdates", {"offset": offset, "timeout": self._timeout_s, "allowed_updates": ALLOWED_UPDATES},
                    timeout_s=self._timeout_s + 15)
                failures = 0
            except Conflict as exc:
                failures += 1
                self.conflicts += 1
                wait = backoff(failures)
                log.warning("telegram: %s. Another process is polling with this bot's token, or a webhook is set "
                            "(run only one Herald per bot token); polling again in %.1fs", exc, wait)
                await asyncio.sleep(wait)
                continue
            except Exception as exc:  # noqa: BLE001 - network, 5xx, 429, a bad answer: all retried after a pause
                failures += 1
                wait = max(backoff(failures), getattr(exc, "retry_after_s", 0.0))
                log.warning("telegram: getUpdates failed (%s); polling again in %.1fs", exc, wait)
                await asyncio.sleep(wait)
                continue
            for update in updates if isinstance(updates, list) else []:
                try:
                    offset = await self._handled(update, offset)
                except Busy as exc:
                    failures += 1
                    log.info("telegram: Herald cannot take update %s now (%s); fetching it again",
                             update.get("update_id"), exc)
                    await asyncio.sleep(backoff(failures))
                    break
                except Exception:  # noqa: BLE001 - not journaled: the offset stays, so it is fetched again
                    failures += 1
                    log.exception("telegram: handling update %s failed; fetching it again", update.get("update_id"))
                    await asyncio.sleep(backoff(failures))
                    break

    async def _handled(self, update: dict[str, Any], offset: int) -> int:
        """Hand the update on, then store the offset past it: durable before Telegram is told."""
        update_id = int(update["update_id"])
        if update_id < offset:
            return offset  # already handled (a confirmation lost on the way)
        await self._receiver.handle(update)
        await self._store.put(OFFSET, str(update_id + 1))
        return update_id + 1

    async def _without_webhook(self) -> None:
        failures = 0
        while True:
            try:
                info = await self._api.call("getWebhookInfo")
                if isinstance(info, dict) and info.get("url"):
                    log.warning("telegram: deleting the webhook set for this bot, to poll instead")
                    await self._api.call("deleteWebhook", {"drop_pending_updates": False})
                return
            except Exception as exc:  # noqa: BLE001 - retried like any other start-up call
                failures += 1
                log.warning("telegram: checking for a webhook failed (%s); retrying", exc)
                await asyncio.sleep(backoff(failures))
