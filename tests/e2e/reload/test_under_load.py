"""Hot reload under load and across processes: no event dropped or doubled while rules change, `herald reload` and
SIGHUP take the same path, and the state of unchanged rules survives reloads."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from engine.core.config import Config
from engine.reload.rules import compile_paths
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.e2e.reload.support import (
    audit_rows,
    post_alerts,
    until,
    write,
    write_atomically,
)
from tests.support import ALICE_TOKEN, chat_url, one_by_one

# -- exactly once under load ---------------------------------------------------------------------------------------

STRESS_EVENTS = 20_000
STRESS_BATCH = 50
STRESS_CONNECTIONS = 8
STRESS_RELOADS = 200


def stress_rules(generation: int, *, broken: bool) -> str:
    """One rule whose name says its generation; a broken one misspells a field (a compile error)."""
    field = "alert.nme" if broken else "alert.name"
    return (f"# generation {generation}{' (broken)' if broken else ''}\n"
            f"rule stress-g{generation}:\n  on alert from stress\n  notify ops saying \"g{generation} {{{field}}}\"\n")


async def test_no_event_is_dropped_or_doubled_while_rules_reload(config: Config, rules_dir: Path) -> None:
    config = one_by_one(config)
    stress_file = rules_dir / "stress.rules"
    write_atomically(stress_file, stress_rules(0, broken=False))
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None
    engine = Engine(config, result.graph, teams=result.teams)
    await engine.start()
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            notes: dict[str, list[str]] = {}

            async def read_notifications() -> None:
                while True:
                    frame = json.loads(await alice.ws.recv())
                    if frame["type"] == "notification":
                        notes.setdefault(frame["event"], []).append(frame["rule"])

            reader = asyncio.create_task(read_notifications())
            accepted: list[str] = []
            posting_done = asyncio.Event()

            async def post_all() -> None:
                batches: asyncio.Queue[int] = asyncio.Queue()
                for start in range(0, STRESS_EVENTS, STRESS_BATCH):
                    batches.put_nowait(start)
                connector = aiohttp.TCPConnector(limit=STRESS_CONNECTIONS)
                async with aiohttp.ClientSession(connector=connector) as session:
                    async def worker() -> None:
                        while not batches.empty():
                            start = batches.get_nowait()
                            alerts = [{"name": f"S{i}", "service": "stress"}
                                      for i in range(start, start + STRESS_BATCH)]
                            accepted.extend(await post_alerts(session, engine, alerts))
                    await asyncio.gather(*(worker() for _ in range(STRESS_CONNECTIONS)))
                posting_done.set()

            async def reload_all() -> list[str]:
                outcomes = []
                for n in range(1, STRESS_RELOADS + 1):
                    generation, broken = (n + 1) // 2, n % 2 == 0  # valid g1, broken, valid g2, broken...
                    write_atomically(stress_file, stress_rules(generation, broken=broken))
                    outcomes.append((await engine.reload(trigger="test")).status)
                    await asyncio.sleep(0.05 if not posting_done.is_set() else 0)
                return outcomes

            _, outcomes = await asyncio.gather(post_all(), reload_all())
            await until(lambda: len(notes) >= STRESS_EVENTS, timeout=150, what="every notification")
            await asyncio.sleep(0.3)  # a doubled notification would arrive by now
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

        async def unhandled() -> int:
            return int((await engine.db.call(lambda conn: conn.execute(
                "SELECT count(*) FROM events WHERE source = 'alertmanager' AND status != 'handled'"
            ).fetchone()))[0])

        for _ in range(200):
            if await unhandled() == 0:
                break
            await asyncio.sleep(0.05)
        rows = await engine.db.call(lambda conn: conn.execute(
            "SELECT id, status, graph_version FROM events WHERE source = 'alertmanager'").fetchall())
        reloaded = await audit_rows(engine, "rules.reloaded")
        rejected = await audit_rows(engine, "rules.rejected")
    finally:
        await engine.stop()

    # Every accepted event is in the journal once, handled by one version.
    assert len(accepted) == len(set(accepted)) == STRESS_EVENTS
    version_of = {row["id"]: row["graph_version"] for row in rows}
    assert set(version_of) == set(accepted)
    assert all(row["status"] == "handled" and row["graph_version"] is not None for row in rows)

    # 100 valid saves swapped once each (by the watcher or the explicit reload), 100 broken ones rejected once each.
    assert len(reloaded) == STRESS_RELOADS // 2 and len(rejected) == STRESS_RELOADS // 2
    assert outcomes.count("rejected") + outcomes.count("unchanged") + outcomes.count("reloaded") == STRESS_RELOADS
    rule_of_version = {1: "stress-g0"} | {entry["version"]: entry["added"][0] for entry in reloaded}
    assert sorted(rule_of_version) == list(range(1, STRESS_RELOADS // 2 + 2))

    # Each event produced exactly one notification, from the rules version the journal recorded for it.
    assert set(notes) == set(accepted)
    doubled = {event: rules for event, rules in notes.items() if len(rules) != 1}
    assert not doubled, f"{len(doubled)} events notified more than once, e.g. {next(iter(doubled.items()))}"
    wrong = [(event, notes[event][0], version_of[event]) for event in accepted
             if notes[event][0] != rule_of_version[version_of[event]]]
    assert not wrong, f"{len(wrong)} events matched by another version than the journal says, e.g. {wrong[:3]}"
    assert len(set(version_of.values())) > 20  # the reloads really happened while events flowed


# -- herald reload and SIGHUP, against `herald run` ---------------------------------------------------------------


def test_herald_reload_and_sighup_take_the_same_path(tmp_path: Path) -> None:
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.support import REPO, free_port

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    (tmp_path / "herald.toml").write_text("workers = 1\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def herald(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    def rule_count() -> int:
        probe = subprocess.run(["curl", "-s", "-f", f"{url}/healthz"], capture_output=True, text=True)
        return int(json.loads(probe.stdout)["rules"]) if probe.returncode == 0 else -1

    def wait_for_rules(count: int) -> None:
        deadline = time.monotonic() + 30
        while rule_count() != count:
            assert process.poll() is None and time.monotonic() < deadline, f"never had {count} rules"
            time.sleep(0.05)

    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--port", str(port), "--no-watch"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rules(2)
        extra = tmp_path / "rules" / "extra.rules"
        extra.write_text("on alert from web notify ops\n")
        done = herald("reload", "--url", url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("rules reloaded: +1 -0 ~0 =2 (version 2)")
        assert rule_count() == 3

        extra.write_text("on alert from web notify ops\non alert from db notify opz\n")
        refused = herald("reload", "--url", url)
        assert refused.returncode == 1
        assert refused.stderr.startswith("rules/extra.rules:2:") and "opz" in refused.stderr
        assert "still running version 2" in refused.stderr and rule_count() == 3

        extra.write_text("on alert from web notify ops\non alert from db notify ops\n")
        process.send_signal(signal.SIGHUP)
        wait_for_rules(4)
        assert herald("reload", "--url", url).stdout.startswith("rules unchanged (version 3)")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "rules/extra.rules:2:" in err and "opz" in err  # the engine's log says where, too
    assert "rules reloaded: +1 -0 ~0 =3 (version 3)" in err

    shown = herald("audit", "show")
    triggers = [json.loads(line.split(None, 4)[4]).get("trigger") for line in shown.stdout.splitlines()
                if " rules." in line]
    assert triggers == ["api", "api", "SIGHUP"]


# -- state of unchanged rules survives reloads -----------------------------------------------------------------------

STATEFUL_RULES = '''
team pager = @bob

rule page-a:
  on alert from db
  dedupe by alert.fingerprint for 30m
  notify ops saying "A {alert.name}" with buttons ack
  escalate to pager after 15m unless acknowledged

rule note-b:
  on alert from web
  notify ops saying "B{n} {alert.name}"
'''


async def test_dedupe_window_and_escalation_of_rule_a_survive_ten_reloads_that_change_rule_b(
        config: Config, rules_dir: Path) -> None:
    from datetime import UTC, datetime

    from engine.core.timers import ManualClock
    from tests.support import BOB_TOKEN

    clock = ManualClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    rules_file = rules_dir / "stateful.rules"
    write(rules_file, STATEFUL_RULES.replace("{n}", "0"))
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    engine = Engine(config, result.graph, teams=result.teams, clock=clock, watch=False)
    await engine.start()
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
                ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob, aiohttp.ClientSession() as session:
            def a_notes() -> list[dict[str, Any]]:
                return [f for f in alice.frames if f["type"] == "notification" and f["rule"] == "page-a"]

            first = await post_alerts(session, engine, [{"name": "Disk", "service": "db", "fingerprint": "fp-1"}])
            await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == first[0])

            for n in range(1, 11):  # ten reloads that change rule B only
                write(rules_file, STATEFUL_RULES.replace("{n}", str(n)))
                outcome = await engine.reload(trigger="test")
                assert (outcome.status, outcome.diff, outcome.changed) == ("reloaded", "+0 -0 ~1 =3", ["note-b"])
            assert engine.runtime.graph_version == 11

            clock.advance(5 * 60)  # inside the 30m window: the repeat is dropped
            await post_alerts(session, engine, [{"name": "Disk", "service": "db", "fingerprint": "fp-1"}])
            [probe] = await post_alerts(session, engine, [{"name": "Probe", "service": "web"}])
            note_b = await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == probe)
            assert note_b["text"] == "B10 Probe"
            await asyncio.sleep(0.3)
            assert len(a_notes()) == 1

            clock.advance(11 * 60)  # 16 minutes after the first: the escalation planned under version 1 fires
            engine.timers.poke()
            escalated = await bob.wait_for(lambda f: f["type"] == "notification" and f["rule"] == "page-a")
            assert escalated["text"].startswith("Escalated: not acknowledged after 15m")

            # Changing rule A's dedupe clause starts its window afresh.
            write(rules_file, STATEFUL_RULES.replace("{n}", "10").replace("for 30m", "for 45m"))
            outcome = await engine.reload(trigger="test")
            assert outcome.changed == ["page-a"]
            [again] = await post_alerts(session, engine, [{"name": "Disk", "service": "db", "fingerprint": "fp-1"}])
            await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == again)
            assert len(a_notes()) == 2
    finally:
        await engine.stop()


UNNAMED_DEDUPE = 'on alert from db dedupe by alert.fingerprint for 30m notify ops saying "A {alert.name}"\n'


async def test_moving_an_unnamed_rule_keeps_its_dedupe_window_and_the_diff_says_moved(
        config: Config, rules_dir: Path) -> None:
    """Unnamed rules are named PATH:LINE, but their state is keyed by what they do (issue 20 item 12): a comment
    added above one (as `herald fmt` or an edit shifts lines) is a move, and its dedupe window holds."""
    rules_file = rules_dir / "moving.rules"
    write(rules_file, UNNAMED_DEDUPE)
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    engine = Engine(config, result.graph, teams=result.teams, watch=False)
    await engine.start()
    try:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, aiohttp.ClientSession() as session:
            def notes() -> list[dict[str, Any]]:
                return [f for f in alice.frames if f["type"] == "notification" and f["text"].startswith("A ")]

            [first] = await post_alerts(session, engine, [{"name": "Disk", "service": "db", "fingerprint": "fp-1"}])
            await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == first)

            write(rules_file, "# database pages\n\n" + UNNAMED_DEDUPE)
            outcome = await engine.reload(trigger="test")
            assert outcome.status == "reloaded" and outcome.diff.startswith("+0 -0 ~0 ="), outcome
            assert outcome.diff.endswith(" moved 1"), outcome
            assert outcome.added == [] and outcome.removed == []

            await post_alerts(session, engine, [{"name": "Disk", "service": "db", "fingerprint": "fp-1"}])
            [probe] = await post_alerts(session, engine, [{"name": "Other", "service": "db", "fingerprint": "fp-2"}])
            await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == probe)
            await asyncio.sleep(0.3)
            assert [n["text"] for n in notes()] == ["A Disk", "A Other"]  # the repeat of Disk was deduplicated
            [reloaded] = [e for e in engine.bus.snapshot().audit if e.action == "rules.reloaded"]
    finally:
        await engine.stop()
    assert "moved" in str(reloaded)
