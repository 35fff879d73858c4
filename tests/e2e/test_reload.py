"""Hot reload against a real engine: a broken save keeps the running rules and says where it is broken, a fixed one
brings the new rules in, each editor save pattern reloads once, the config reloads as a whole, `herald reload` and
SIGHUP take the same path, and no event is dropped or doubled while rules change under load."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from textual.widgets import DataTable, Static

from engine.app import Engine
from engine.cli_client import alert_payload
from engine.client import RemoteEngineClient
from engine.config import Config, load_config
from engine.reload import ConfigSource
from engine.rules import compile_paths
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, chat_url, http_url
from tui import make_app

RULE_A = "rule page-db:\n  on alert severity critical from database\n  notify ops saying \"A {alert.name}\"\n"


async def audit_rows(engine: Engine, action: str) -> list[dict[str, Any]]:
    rows = await engine.db.call(
        lambda conn: conn.execute("SELECT actor, data FROM audit_log WHERE action = ? ORDER BY seq",
                                  (action,)).fetchall())
    return [{"actor": row["actor"], **json.loads(row["data"])} for row in rows]


async def until(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def read(path: Path) -> str:
    return path.read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def write_atomically(path: Path, text: str) -> None:
    """Write a temp file next to `path` (a name the watcher ignores) and rename it over `path`."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


async def post_alerts(session: aiohttp.ClientSession, engine: Engine, alerts: list[dict[str, str]]) -> list[str]:
    """POST one Alertmanager payload with these (name, service, severity) alerts; return the accepted event ids.
    A 503 (the engine's queue is full: nothing was accepted) is retried, as Alertmanager does."""
    payload = alert_payload({"alertname": "x"}, summary="reload test", resolved=False)
    template = payload["alerts"][0]  # type: ignore[index]
    payload["alerts"] = [
        {**template, "labels": {"alertname": a["name"], "service": a["service"], "severity": a.get("severity", "")},
         "fingerprint": a.get("fingerprint", a["name"])} for a in alerts]
    while True:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=payload) as response:
            body = await response.json()
            if response.status != 503:
                assert response.status == 200, body
                return list(body["events"])
        await asyncio.sleep(0.1)


@asynccontextmanager
async def engine_with_config_source(config_file: Path, **kwargs: Any) -> AsyncIterator[Engine]:
    config = load_config(config_file)
    result = compile_paths([config.rules_dir], config)
    assert result.graph is not None, result.render_all()
    engine = Engine(config, result.graph, teams=result.teams,
                    config_source=ConfigSource(config_file, lambda: load_config(config_file)), **kwargs)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


# -- a broken save, then the fix ------------------------------------------------------------------------------


async def test_broken_save_keeps_the_running_rules_and_reports_file_line_col(engine: Engine, rules_dir: Path) -> None:
    extra = rules_dir / "extra.rules"
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, aiohttp.ClientSession() as session:
        extra.write_text("# web pages\nrule page-web:\n  on alert severity critical from web\n  notify opz\n")
        await until(lambda: engine.reloader.view is not None and engine.reloader.view.last.status == "rejected",
                    what="the watcher to reject the broken save")
        assert engine.runtime.graph_version == 1

        # The old rules still run.
        [db_event] = await post_alerts(session, engine, [{"name": "DbDown", "service": "database",
                                                          "severity": "critical"}])
        note = await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == db_event)
        assert "DbDown" in note["text"]

        # The API says where: 422 with every diagnostic.
        headers = {"Authorization": f"Bearer {engine.api_token}"}
        async with session.post(f"{http_url(engine)}/api/v1/reload", headers=headers) as response:
            assert response.status == 422
            body = await response.json()
        [diag] = body["diagnostics"]
        assert diag["path"].endswith("extra.rules") and (diag["line"], diag["col"]) == (4, 10)
        assert "opz" in diag["message"] and body["version"] == 1 and body["status"] == "rejected"

        # So does the stream's snapshot.
        async with session.ws_connect(f"{http_url(engine)}/api/v1/stream", headers=headers) as ws:
            frame = await ws.receive_json(timeout=10)
        rules = frame["snapshot"]["rules"]
        assert rules["version"] == 1 and rules["last"]["status"] == "rejected"
        assert rules["last"]["diagnostics"][0]["line"] == 4
        assert [r["name"] for r in rules["rules"]] == [r.name for r in engine.graph.rules]

        # And the audit, with the location and the message; rejected once, not once per look.
        [rejected] = await audit_rows(engine, "rules.rejected")
        assert rejected["diagnostics"][0]["at"].endswith("extra.rules:4:10")
        assert "opz" in rejected["diagnostics"][0]["message"]

        # Fixing the file brings the new rule in.
        extra.write_text("# web pages\nrule page-web:\n  on alert severity critical from web\n"
                         "  notify ops saying \"web: {alert.name}\"\n")
        await until(lambda: engine.runtime.graph_version == 2, what="the fixed save to be reloaded")
        [web_event] = await post_alerts(session, engine, [{"name": "WebDown", "service": "web",
                                                           "severity": "critical"}])
        note = await alice.wait_for(lambda f: f["type"] == "notification" and f["event"] == web_event)
        assert note["text"] == "web: WebDown" and note["rule"] == "page-web"

    [reloaded] = await audit_rows(engine, "rules.reloaded")
    assert reloaded["diff"] == "+1 -0 ~0 =2" and reloaded["added"] == ["page-web"] and reloaded["version"] == 2
    assert engine.reloader.view is not None and engine.reloader.view.last.diagnostics == []


async def test_the_tui_rules_tab_shows_the_error_and_then_the_new_rules(engine: Engine, rules_dir: Path) -> None:
    app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("5")
        table = app.query_one("#rules-table", DataTable)
        status = app.query_one("#rules-status", Static)
        problems = app.query_one("#rules-problems", Static)
        await until(lambda: table.row_count == 2, what="the rules tab to list the running rules")
        assert "version 1" in str(status.content) and not problems.display

        (rules_dir / "extra.rules").write_text("rule page-web:\n  on alert from web\n"
                                               "  notify ops saying \"{alert.nme}\"\n")
        await until(lambda: problems.display and "extra.rules:3:" in str(problems.content), what="the error")
        shown = str(problems.content)
        assert "extra.rules:3:" in shown and "alert.nme" in shown
        assert "rejected" in str(status.content) and "version 1" in str(status.content)
        assert table.row_count == 2  # still the running rules

        (rules_dir / "extra.rules").write_text("rule page-web:\n  on alert from web\n  notify ops\n")
        await until(lambda: table.row_count == 3, what="the new rule")
        assert not problems.display and "version 2" in str(status.content) and "+1 -0 ~0 =2" in str(status.content)
        assert str(table.get_row("page-web")[1]).endswith("extra.rules:1")


# -- editor save patterns --------------------------------------------------------------------------------------


def _save_in_place(path: Path, text: str) -> None:
    with open(path, "r+") as handle:
        handle.write(text)
        handle.truncate()


def _save_temp_then_rename(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp.4711")
    temp.write_text(text)
    os.replace(temp, path)


async def _save_truncate_then_write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.flush()
        os.fsync(handle.fileno())
        await asyncio.sleep(0.02)  # an editor that truncates, then writes a moment later
        handle.write(text)


def _save_like_vim(path: Path, text: str) -> None:
    """vim with backupcopy=no: a write probe, a swap file, the old file renamed to a backup, a new file."""
    folder = path.parent
    (folder / "4913").write_text("")
    (folder / "4913").unlink()
    swap = folder / f".{path.name}.swp"
    swap.write_bytes(b"b0VIM 9.0" + b"\0" * 100)
    backup = path.with_name(path.name + "~")
    os.replace(path, backup)
    path.write_text(text)
    backup.unlink()
    swap.unlink()


def _save_like_emacs(path: Path, text: str) -> None:
    """emacs: a lock symlink and an autosave file around a write in place."""
    lock = path.with_name(f".#{path.name}")
    os.symlink("user@host.1234:1700000000", lock)
    autosave = path.with_name(f"#{path.name}#")
    autosave.write_text(text)
    path.write_text(text)
    autosave.unlink()
    lock.unlink()


async def test_each_editor_save_pattern_gives_exactly_one_reload(engine: Engine, rules_dir: Path) -> None:
    target = rules_dir / "extra.rules"
    target.write_text(RULE_A)
    await until(lambda: engine.reloader.reloads == 1, what="the first save")
    patterns: list[tuple[str, Callable[[Path, str], Any]]] = [
        ("in place", _save_in_place), ("temp then rename", _save_temp_then_rename),
        ("truncate then write", _save_truncate_then_write), ("vim", _save_like_vim), ("emacs", _save_like_emacs)]
    for n, (name, save) in enumerate(patterns, start=1):
        before = engine.reloader.reloads
        outcome = save(target, RULE_A.replace("A {alert.name}", f"A{n} {{alert.name}}"))
        if asyncio.iscoroutine(outcome):
            await outcome
        await until(lambda before=before: engine.reloader.reloads > before, what=f"the {name} save")
        await asyncio.sleep(0.6)  # several quiet spells: any second reload would have happened by now
        assert engine.reloader.reloads == before + 1, f"{name}: {engine.reloader.reloads - before} reloads"
        assert engine.reloader.view is not None and engine.reloader.view.last.diff == "+0 -0 ~1 =2", name

    # Temp and swap files alone, and a save with the same text, reload nothing.
    before, attempts = engine.reloader.reloads, engine.reloader.attempts
    (rules_dir / ".extra.rules.swp").write_text("swap")
    (rules_dir / "extra.rules~").write_text("backup")
    (rules_dir / "4913").write_text("")
    target.write_text(target.read_text())
    await asyncio.sleep(0.8)
    assert (engine.reloader.reloads, engine.reloader.attempts) == (before, attempts)
    assert len(await audit_rows(engine, "rules.reloaded")) == 1 + len(patterns)


async def test_a_new_script_recompiles_and_editing_one_does_not(engine: Engine, rules_dir: Path) -> None:
    (rules_dir / "deploy.rules").write_text("on command deploy require role admin run deploy.sh sandboxed\n")
    await until(lambda: engine.reloader.view is not None and engine.reloader.view.last.status == "rejected",
                what="the rule naming a missing script to be rejected")
    script = rules_dir / "scripts" / "deploy.sh"
    script.write_text("#!/bin/sh\necho deploying\n")
    script.chmod(0o755)
    await until(lambda: engine.runtime.graph_version == 2, what="the new script to let the rule in")
    script.write_text("#!/bin/sh\necho deploying v2\n")
    await asyncio.sleep(0.6)
    assert engine.runtime.graph_version == 2 and engine.reloader.reloads == 1


# -- the config ------------------------------------------------------------------------------------------------


async def test_config_reloads_as_a_whole(config_file: Path, rules_dir: Path) -> None:
    async with engine_with_config_source(config_file) as engine:
        original = read(config_file)
        # A rule naming a team only the new config has: the two go in together.
        write(rules_dir / "dba.rules", "on alert from postgres notify dba\n")
        write(config_file, original + '\n[teams.dba]\nmembers = ["carol"]\n')
        await until(lambda: engine.runtime.graph_version == 2, what="config and rules to go in together")
        assert "dba" in engine.config.teams and "dba" in engine.runtime.services.config.teams

        # A new person can act at once: the directory is swapped with the config.
        append(config_file, '\n[principals.dave]\nroles = ["operator"]\n')
        await until(lambda: engine.directory.exists("dave"), what="dave to exist")
        assert engine.directory.roles_of("dave") == {"operator"}

        # A bad config keeps the old one (and the rules) and says where.
        append(config_file, "\n[principals.erin]\nrolez = []\n")
        await until(lambda: engine.reloader.view is not None and engine.reloader.view.last.status == "rejected",
                    what="the bad config to be rejected")
        [diag] = engine.reloader.view.last.diagnostics
        assert diag.path == str(config_file) and "principals.erin.rolez" in diag.message
        assert not engine.directory.exists("erin") and engine.runtime.graph_version == 3

        # A TOML syntax error carries its line and column.
        write(config_file, original + "\n[teams.dba\n")
        await until(lambda: engine.reloader.view is not None
                    and engine.reloader.view.last.diagnostics[0].line > 0, what="a positioned TOML error")

        # Settings that need a restart are reported, not applied; the rest is.
        write(config_file, original.replace("port = 0", "port = 1234")
                               + '\n[teams.dba]\nmembers = ["carol"]\n')
        await until(lambda: engine.reloader.view is not None and engine.reloader.view.last.status == "reloaded"
                    and engine.runtime.graph_version == 4, what="the restart-only change")
        assert engine.reloader.view.last.needs_restart == ["http.port"]
        assert engine.config.http.port == 0 and not engine.directory.exists("dave")
        [*_, last] = await audit_rows(engine, "rules.reloaded")
        assert last["needs_restart"] == ["http.port"]


# -- the same path: API roles -------------------------------------------------------------------------------------


async def test_reload_api_needs_a_token_and_the_admin_role(engine: Engine) -> None:
    from engine import keys
    from engine.api import API_PURPOSE

    viewer, _ = await engine.db.call(keys.issue, sub="bob", purpose=API_PURPOSE, ttl_s=60)
    admin, _ = await engine.db.call(keys.issue, sub="alice", purpose=API_PURPOSE, ttl_s=60)
    url = f"{http_url(engine)}/api/v1/reload"
    async with aiohttp.ClientSession() as session:
        async with session.post(url) as response:
            assert response.status == 401
        async with session.post(url, headers={"Authorization": f"Bearer {viewer}"}) as response:
            assert response.status == 403
        async with session.post(url, headers={"Authorization": f"Bearer {admin}"}) as response:
            assert response.status == 200
            body = await response.json()
    assert body["status"] == "unchanged" and body["version"] == 1


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

    from engine.timers import ManualClock
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
