"""Alert storms: 500 alerts to one team through the Alertmanager webhook give, after the first `storm_threshold`
notifications, ONE digest message per conversation, edited until it lists every alert (on Herald's chat in full, on a
platform with a size limit with an honest count of the rest); once the storm is over a new alert is a notification
of its own again; a restart mid-storm continues the same digest. The engine's clock is moved by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.config import Config, load_config
from engine.core.errors import ConfigError
from engine.core.timers import ManualClock
from engine.plugin import discover
from engine.plugin.discovery import active_integrations, connector_specs
from engine.reload.rules import compile_paths
from engine.server.app import Engine
from engine.testing import ChatClient
from engine.testing.conformance import eventually
from tests.connectors.loopchat_server import LoopchatServer
from tests.connectors.support import installed_plugin
from tests.e2e.stateful.support import START, settle
from tests.support import ALICE_TOKEN

ROOM = "-100ops"
MORE = "more, see `herald alerts list`"


def _config(tmp: Path, server: LoopchatServer, **alerts: Any) -> Config:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "ops.rules").write_text("on alert notify ops with buttons\n")
    return Config.model_validate({
        "data_dir": "data", "rules_dir": "rules", "http": {"port": 0}, "alerts": alerts,
        "principals": {"alice": {"roles": ["admin"], "chat_tokens": [ALICE_TOKEN]}},
        "teams": {"ops": {"members": ["alice"], "targets": [f"loopchat:{ROOM}"]}},
        "integrations": {"loopchat": {"api_url": server.url}},
    }).resolved(tmp)


@asynccontextmanager
async def _engine(config: Config, clock: ManualClock) -> AsyncIterator[Engine]:
    integrations = discover()
    result = compile_paths([config.rules_dir], config, connector_specs(active_integrations(config, integrations)))
    assert result.graph is not None, result.render_all()
    engine = Engine(config, result.graph, teams=result.teams, integrations=integrations, clock=clock, watch=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def _post(engine: Engine, numbers: range, *, status: str = "firing") -> None:
    alerts = [{"status": status, "fingerprint": f"fp-{n}", "startsAt": "2026-06-01T12:00:00Z",
               "labels": {"alertname": f"Storm{n}", "severity": "critical", "service": "db", "instance": f"db{n}"},
               "annotations": {"summary": f"replica {n} lags behind its primary by far too many seconds, again"}}
              for n in numbers]
    if status == "resolved":
        for alert in alerts:
            alert["endsAt"] = "2026-06-01T12:05:00Z"
    body = {"version": "4", "status": status, "receiver": "herald", "groupKey": "g", "alerts": alerts}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{engine.port}/hooks/alertmanager", json=body) as response:
        assert response.status == 200, await response.text()


def _listed(text: str) -> set[str]:
    """The alerts a digest lists, by name."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("• ")}


def _shown(client: ChatClient) -> dict[str, dict[str, Any]]:
    """What alice's chat shows: each message by its seq, as last edited."""
    shown: dict[str, dict[str, Any]] = {}
    for frame in client.frames:
        if frame["type"] == "notification":
            shown[str(frame["seq"])] = frame
        elif frame["type"] == "notification_edit" and frame["message"] in shown:
            shown[frame["message"]] = {**shown[frame["message"]], "text": frame["text"]}
    return shown


async def test_a_storm_of_500_alerts_gives_one_digest_per_conversation_that_lists_them_all(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    clock = ManualClock(START)
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with _engine(_config(tmp_path, platform_server), clock) as engine, \
                ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
            for batch in range(10):
                await _post(engine, range(batch * 50, batch * 50 + 50))
            await settle(engine)
            everyone = {f"Storm{n}" for n in range(500)}

            # Herald's chat: 10 notifications one by one, then one digest that ends up listing the other 490
            def digest_in_chat() -> dict[str, Any] | None:
                shown = _shown(alice)
                digest = [m for m in shown.values() if m["rule"] == "alert storm"]
                return digest[0] if len(digest) == 1 and len(_listed(digest[0]["text"])) == 490 else None

            await alice.wait_for(lambda _frame: digest_in_chat() is not None, timeout=60)
            digest = digest_in_chat()
            assert digest is not None
            shown = _shown(alice)
            single = [m for m in shown.values() if m["rule"] != "alert storm"]
            assert len(shown) == 11 and len(single) == 10
            assert digest["text"].startswith("⚠ Alert storm for ops: 490 more alerts since 12:00 UTC\n")
            assert "• CRITICAL Storm" in digest["text"] and "(db/db" in digest["text"] and MORE not in digest["text"]
            assert _listed(digest["text"]) | {m["text"].split()[2] for m in single} == everyone
            assert digest["buttons"] == []
            edits = [f for f in alice.frames if f["type"] == "notification_edit"]
            assert len(edits) < 100, f"{len(edits)} edits of the digest reached the chat"

            # the platform with a 4096-character limit: the same 11 messages; the digest is cut between whole lines
            # and says how many more there are
            def room_digest() -> Any:
                room = platform_server.chat_messages(ROOM)
                stormy = [m for m in room if m.text.startswith("⚠ Alert storm")]
                return stormy[0] if len(room) == 11 and len(stormy) == 1 and "490 more alerts" in stormy[0].text \
                    and MORE in stormy[0].text else None

            posted = await eventually(lambda: asyncio.sleep(0, room_digest()), "the room's digest")
            lines = posted.text.splitlines()
            cut = lines[-1]
            assert len(posted.text) <= 4096 and cut.startswith("… and ") and cut.endswith(MORE)
            assert all(line.startswith("• CRITICAL Storm") for line in lines[1:-1])
            assert len(lines[1:-1]) + int(cut.split()[2]) == 490
            assert posted.edits < 100 and len(platform_server.calls) - platform_server.calls.count("getUpdates") < 150

            # nothing lost: every alert is on the board and in the audit
            assert len(engine.bus.snapshot().alerts) == 500
            audited = await engine.db.call(lambda c: c.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'notification.digested'").fetchone()[0])
            assert audited == 490

            # the storm is over once no alert overflowed for the window: the next alert is news of its own again
            clock.advance(61)
            await _post(engine, range(500, 501))
            await settle(engine)
            await eventually(lambda: asyncio.sleep(0, any("Storm500" in m.text and not m.text.startswith("⚠")
                                                          for m in platform_server.chat_messages(ROOM))),
                             "Storm500 on its own in the room")
            note = await alice.wait_for(lambda f: f["type"] == "notification" and "Storm500" in f["text"])
            assert note["rule"] != "alert storm"


async def test_a_restart_mid_storm_continues_the_same_digest(tmp_path: Path,
                                                             platform_server: LoopchatServer) -> None:
    clock = ManualClock(START)
    config = _config(tmp_path, platform_server, storm_threshold=3, storm_window_s=60)
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with _engine(config, clock) as engine:
            await _post(engine, range(0, 8))
            await settle(engine)
            await eventually(lambda: asyncio.sleep(0, _room_digest_lists(platform_server, 5)), "a digest of 5")
        clock.advance(30)
        async with _engine(config, clock) as engine:
            await _post(engine, range(8, 13))
            await settle(engine)
            posted = await eventually(lambda: asyncio.sleep(0, _room_digest_lists(platform_server, 10)),
                                      "the same digest listing 10")
            assert len(platform_server.chat_messages(ROOM)) == 4  # 3 one by one, one digest

            # a resolve shows on the alert's line
            await _post(engine, range(12, 13), status="resolved")
            await settle(engine)
            await eventually(lambda: asyncio.sleep(0, any(line.startswith("• CRITICAL Storm12 ")
                                                          and line.endswith("— ✔ resolved")
                                                          for line in posted.text.splitlines())),
                             "Storm12 resolved in the digest")
            assert len(platform_server.chat_messages(ROOM)) == 4


async def test_a_finished_digest_follows_its_alerts_across_a_restart_with_one_edit_for_many(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    clock = ManualClock(START)
    config = _config(tmp_path, platform_server, storm_threshold=2, storm_window_s=60)
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with _engine(config, clock) as engine:
            await _post(engine, range(0, 8))
            await settle(engine)
            posted = await eventually(lambda: asyncio.sleep(0, _room_digest_lists(platform_server, 6)),
                                      "a digest of 6")
            # the storm is over: the next alert after the window is a message of its own
            clock.advance(61)
            await _post(engine, range(8, 9))
            await settle(engine)
            await eventually(lambda: asyncio.sleep(0, len(platform_server.chat_messages(ROOM)) == 4),
                             "Storm8 on its own")
            # during the storm or after it: an acknowledged alert's line says so
            board = {a.fingerprint: a for a in engine.bus.snapshot().alerts}
            ack = next(b.id for b in board["fp-3"].buttons if b.action == "ack")
            async with ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
                pressed = await alice.press(ack)
                reply = await alice.wait_for(lambda f: f.get("in_reply_to") == pressed)
                assert str(reply.get("text")).startswith("Acknowledged"), reply
            await eventually(lambda: asyncio.sleep(0, _line(posted.text, "Storm3").endswith(
                "— ✅ acknowledged by alice")), "Storm3 acknowledged in the finished digest")
            # and an unacknowledged one's line says that (the board offers Unacknowledge once it is acknowledged)
            unack = next(b.id for b in {a.fingerprint: a for a in engine.bus.snapshot().alerts}["fp-3"].buttons
                         if b.action == "unack")
            async with ChatClient.connect(f"ws://127.0.0.1:{engine.port}/chat", ALICE_TOKEN) as alice:
                pressed = await alice.press(unack)
                reply = await alice.wait_for(lambda f: f.get("in_reply_to") == pressed)
                assert str(reply.get("text")).startswith("Unacknowledged"), reply
            await eventually(lambda: asyncio.sleep(0, _line(posted.text, "Storm3").endswith(
                "— ↩ unacknowledged by alice")), "Storm3 unacknowledged in the finished digest")
        async with _engine(config, clock) as engine:  # the finished digest still follows after a restart
            edits = posted.edits
            await _post(engine, range(2, 8), status="resolved")  # all six alerts of the digest, in one request
            await settle(engine)
            await eventually(lambda: asyncio.sleep(0, all(_line(posted.text, f"Storm{n}").endswith("— ✔ resolved")
                                                          for n in range(2, 8))),
                             "the six alerts resolved in the finished digest")
            assert posted.edits - edits < 6, f"{posted.edits - edits} edits of the digest for 6 resolves"
            assert len(platform_server.chat_messages(ROOM)) == 4  # edited in place: no new message

            # every alert of the finished digest resolved: it is let go, its message final
            async def kept() -> int:
                return int(await engine.db.call(lambda c: c.execute(
                    "SELECT (SELECT count(*) FROM finished_storms) + (SELECT count(*) FROM storm_lines)")
                    .fetchone()[0]))

            await eventually(lambda: _is_zero(kept()), "the finished digest let go")


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


def _line(text: str, name: str) -> str:
    return next((line for line in text.splitlines() if line.startswith(f"• CRITICAL {name} ")), "")


def _room_digest_lists(server: LoopchatServer, count: int) -> Any:
    stormy = [m for m in server.chat_messages(ROOM) if m.text.startswith("⚠ Alert storm")]
    return stormy[0] if len(stormy) == 1 and len(_listed(stormy[0].text)) == count else None


@pytest.mark.parametrize(("alerts", "problem"), [
    ("storm_threshold = -1", "alerts.storm_threshold"),
    ("storm_window_s = 0", "alerts.storm_window_s"),
    ("storm_treshold = 5", "storm_treshold"),
])
def test_a_bad_storm_setting_is_a_config_error(config_file: Path, alerts: str, problem: str) -> None:
    config_file.write_text(config_file.read_text() + f"[alerts]\n{alerts}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert problem in str(caught.value), str(caught.value)
