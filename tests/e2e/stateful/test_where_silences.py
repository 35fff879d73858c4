"""`silence alert where LABEL = VALUE ... for D` through a real engine: a silence by labels made from chat mutes
the matching alerts firing then and arriving later (not the others), ends at its time on the engine's clock, holds
across a restart, and is listed by `GET /api/v1/silences`."""

from __future__ import annotations

from typing import Any

import aiohttp

from engine.core.config import Config
from engine.core.timers import ManualClock
from engine.testing import ChatClient
from tests.e2e.stateful.support import START, audit, drain, engine_for, notes, post_alert, runs, settle, tick
from tests.support import ALICE_TOKEN, chat_url, http_url

RULES = '''
rule page:
  on alert
  notify ops saying "page {alert.summary}"

rule hush:
  on command hush <service: word>
  silence alert where service = {command.service} and alertname = "Down" for 1h
'''


async def silences(engine: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(
            f"{http_url(engine)}/api/v1/silences", headers={"Authorization": f"Bearer {engine.api_token}"}) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def test_a_where_silence_mutes_matching_alerts_now_and_later_until_its_end(config: Config) -> None:
    clock = ManualClock(START)
    async with engine_for(config, RULES, clock) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await post_alert(engine, "Down", service="shop", summary="before")  # firing when the silence is made
        first = await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "page before")
        await alice.say("/hush shop")
        edit = await alice.wait_for(lambda f: f["type"] == "notification_edit" and "Silenced" in f["text"])
        assert edit["message"] == str(first["seq"]) and "🔕 Silenced by alice until" in edit["text"]

        await post_alert(engine, "Down", service="shop", summary="muted")  # arrives later: muted
        await post_alert(engine, "Down", service="db", summary="other service")  # not matched: heard
        await post_alert(engine, "Full", service="shop", summary="other name")  # not matched: heard
        await settle(engine)
        [made] = await audit(engine, "silence.created")
        assert made["actor"] == "alice" and made["matchers"] == 'service="shop", alertname="Down"'

        await tick(engine, clock, 3600 + 1)  # the silence ends at its time
        [expired] = await audit(engine, "silence.expired")
        assert expired["silence"] == made["silence"] and expired["alerts"] == 1
        await post_alert(engine, "Down", service="shop", summary="after")
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "page after")
        await drain(alice)
        assert [n["text"] for n in notes(alice, "page")] == [
            "page before", "page other service", "page other name", "page after"]
        details = [d for _, d in await runs(engine, "page")]  # alerts of different fingerprints run side by side
        assert len([d for d in details if d.startswith("muted until")]) == 1 and len(details) == 5
        assert (await silences(engine))["silences"] == []


async def test_a_where_silence_holds_across_a_restart_and_is_listed(config: Config) -> None:
    async with engine_for(config, RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        await alice.say("/hush shop")
        for _ in range(100):
            if await audit(engine, "silence.created"):
                break
            await drain(alice, 0.1)
    async with engine_for(config, RULES) as engine, ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        [listed] = (await silences(engine))["silences"]
        assert listed["created_by"] == "alice" and listed["rule"] == "hush"
        assert listed["matchers"] == [{"name": "service", "value": "shop"}, {"name": "alertname", "value": "Down"}]
        await post_alert(engine, "Down", service="shop", summary="muted")
        await post_alert(engine, "Down", service="db", summary="heard")
        await alice.wait_for(lambda f: f["type"] == "notification" and f["text"] == "page heard")
        await settle(engine)
        await drain(alice)
        assert [n["text"] for n in notes(alice, "page")] == ["page heard"]
