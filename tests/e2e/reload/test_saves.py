"""Hot reload against a real engine: a broken save keeps the running rules and says where it is broken (log, API,
audit, TUI), a fixed one brings the new rules in, each editor save pattern reloads once, scripts and the config
reload, and the reload API checks who asks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from textual.widgets import DataTable, Static

from engine.client.remote import RemoteEngineClient
from engine.server.app import Engine
from engine.testing import ChatClient
from tests.e2e.reload.support import (
    RULE_A,
    append,
    audit_rows,
    engine_with_config_source,
    post_alerts,
    read,
    until,
    write,
)
from tests.support import ALICE_TOKEN, chat_url, http_url
from tui import make_app

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

    # The audit entry is written just after the swap is published: under load it can lag the notification.
    for _ in range(100):
        if await audit_rows(engine, "rules.reloaded"):
            break
        await asyncio.sleep(0.02)
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
        assert [str(cell) for cell in table.get_row("page-web")[1:3]] == ["on alert from web firing", "added"]
        assert str(table.get_row("page-web")[3]).endswith("extra.rules:1")


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
        # The audit entry is written just after the swap is published; wait for it rather than race it.
        for _ in range(100):
            [*_, last] = await audit_rows(engine, "rules.reloaded")
            if last["version"] == 4:
                break
            await asyncio.sleep(0.02)
        assert last["version"] == 4 and last["needs_restart"] == ["http.port"]


# -- the same path: API roles -------------------------------------------------------------------------------------


async def test_reload_api_needs_a_token_and_the_admin_role(engine: Engine) -> None:
    from engine.security import keys
    from engine.server.api import API_PURPOSE

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
