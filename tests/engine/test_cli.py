"""The `herald` command line as users run it: check, run (as a real process), send, and refusing broken rules."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, free_port

HERALD = [sys.executable, "-m", "engine.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def herald(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERALD, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding a copy of the default rules folder and no config file."""
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    return tmp_path


def test_default_rules_hold_the_customers_lines_and_check_without_config(workdir: Path) -> None:
    text = (REPO / "rules" / "ops.rules").read_text()
    assert "on alert severity critical from database notify ops with buttons\n" in text
    assert "on command backup require role admin run backup.sh sandboxed\n" in text
    result = herald("check", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "ok: 2 rules in 1 file(s)" in result.stdout


def test_check_prints_file_line_col_with_a_caret_and_exits_1(workdir: Path) -> None:
    broken = workdir / "rules" / "broken.rules"
    broken.write_text("# first line\non command restart require role admin run restart.sh sandboxed timeout soon\n")
    result = herald("check", cwd=workdir)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("rules/broken.rules:2:"))
    assert "timeout" in lines[first] and "soon" in lines[first]
    caret_line = lines[first + 2]
    assert caret_line.strip().startswith("^") and caret_line.index("^") == lines[first + 1].index("soon")


def test_check_names_an_unknown_team_and_a_missing_script(workdir: Path) -> None:
    (workdir / "rules" / "more.rules").write_text("on command deploy run deploy.sh sandboxed\n"
                                                  "on alert severity critical notify opz\n")
    result = herald("check", "rules", cwd=workdir)
    assert result.returncode == 1
    assert "rules/more.rules:1:" in result.stderr and "deploy.sh" in result.stderr
    assert "rules/more.rules:2:" in result.stderr and "ops" in result.stderr  # did you mean


def test_run_refuses_to_start_with_broken_rules(workdir: Path) -> None:
    (workdir / "rules" / "bad.rules").write_text("on alert severity critical notfy ops\n")
    result = herald("run", "--port", "0", cwd=workdir)
    assert result.returncode == 1
    assert "rules/bad.rules:1:" in result.stderr and "not starting" in result.stderr


def test_run_serves_healthz_accepts_a_sent_alert_and_stops_on_sigterm(workdir: Path) -> None:
    port = free_port()
    process = subprocess.Popen([*HERALD, "run", "--port", str(port)], cwd=workdir, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(["curl", "-s", "-f", f"http://127.0.0.1:{port}/healthz"], capture_output=True,
                                   text=True)
            if probe.returncode == 0:  # 200: running (it answers 503 "starting" before that)
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "herald run did not become healthy"
            time.sleep(0.1)
        assert json.loads(probe.stdout) == {"status": "running", "rules": 2}

        sent = herald("send", "--url", f"http://127.0.0.1:{port}", "alert", "severity=critical",
                      "service=database", cwd=workdir)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("sent firing alert alertname=TestAlert severity=critical service=database; "
                                      "Herald accepted it as event "), sent.stdout
        assert (workdir / ".herald" / "herald.db").exists()
        assert oct((workdir / ".herald" / "api-token").stat().st_mode & 0o777) == "0o600"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Herald is ready" in out


def test_check_reports_bad_integration_sections_and_addresses_before_anything_runs(workdir: Path) -> None:
    (workdir / "herald.toml").write_text(
        '[principals.alice]\naccounts = ["telegram:1111111", "nowhere:1111111"]\n'
        '[teams.ops]\ntargets = ["chat:Not A Room"]\n'
        '[integrations.webhook]\nbogus = 1\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 2
    problems = result.stderr.strip()
    assert "integrations.webhook.bogus: unknown key" in problems
    assert "principals.alice.accounts: 'nowhere:1111111': no connector for platform 'nowhere'" in problems
    assert ("principals.alice.accounts: 'telegram:1111111': the telegram connector is installed but not configured "
            "(add an [integrations.telegram] section)") in problems
    assert "teams.ops.targets: 'chat:Not A Room': a Herald chat room is a name like 'ops'" in problems


def test_a_rule_file_team_address_is_checked_by_its_connector_at_file_line_col(workdir: Path) -> None:
    (workdir / "rules" / "teams.rules").write_text('team night = chat "ops", chat "Night Shift!"\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 1
    assert "teams.rules:1:26: chat address 'Night Shift!': a Herald chat room is a name like 'ops'" in result.stderr
@contextlib.contextmanager
def running_herald(workdir: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`herald run ARGS` as a process (its log in workdir/engine.log), once it has published its address (the URL)
    in the data folder."""
    address_file = workdir / ".herald" / "engine.address"
    with open(workdir / "engine.log", "w") as log:
        process = subprocess.Popen([*HERALD, "run", *args], cwd=workdir, env=ENV, stdout=log, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 30
        while not address_file.exists():
            assert process.poll() is None, (workdir / "engine.log").read_text()
            assert time.monotonic() < deadline, "herald run did not publish its address"
            time.sleep(0.1)
        yield process, address_file.read_text().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_second_engine_on_the_same_data_folder_is_refused_naming_the_first(workdir: Path) -> None:
    with running_herald(workdir, "--port", "0") as (first, url):
        second = herald("run", "--port", "0", cwd=workdir)
        assert second.returncode == 1
        message = second.stderr.strip().splitlines()
        assert len(message) == 1, second.stderr
        assert f"in use by the engine with pid {first.pid} at {url}" in message[0]
        assert first.poll() is None  # the first one is untouched
    assert first.returncode == 0
    assert not (workdir / ".herald" / "engine.address").exists()  # a clean stop takes its address back
    audit = herald("audit", "show", cwd=workdir)
    assert audit.stdout.count("engine.started") == 1, audit.stdout


def test_send_and_reload_find_the_engine_the_data_folder_names(workdir: Path) -> None:
    # --port 0: the engine is not on the config's port (8470), only its data folder says where it is.
    with running_herald(workdir, "--port", "0") as (_, url):
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":8470")
        sent = herald("send", "alert", "severity=critical", "service=database", cwd=workdir)
        assert sent.returncode == 0, sent.stderr
        assert "Herald accepted it as event" in sent.stdout
        reload = herald("reload", cwd=workdir)
        assert reload.returncode == 0, reload.stderr
        after = herald("send", "alert", "severity=warning", "--url", url, cwd=workdir)  # --url after the kind
        assert after.returncode == 0, after.stderr


def test_send_command_takes_a_short_task_id(
        workdir: Path, rules_dir: Path) -> None:
    assert herald("init", cwd=workdir).returncode == 0  # api_principal admin, as the README sets it up
    script = rules_dir / "scripts" / "short.sh"  # rules_dir: where the sandbox user can read the script
    script.write_text("#!/bin/sh\necho started\nsleep 2\n")
    script.chmod(0o755)
    with (rules_dir / "ops.rules").open("a") as rules:
        rules.write("on command short require role admin run short.sh\n")
    with running_herald(workdir, "--port", "0", "--rules", str(rules_dir)):
        first = herald("send", "command", "/short", "--timeout", "1", cwd=workdir)
        assert first.returncode == 1 and "no result within 1 s" in first.stderr  # its result comes later
        match = re.search(r"task ([0-9A-Z]{26}) queued", first.stdout)
        assert match, first.stdout
        task = match.group(1)
        deadline = time.monotonic() + 60
        while _task_status(workdir, task) != "succeeded":
            assert time.monotonic() < deadline, "the task did not finish"
            time.sleep(0.1)
        status = herald("send", "command", f"/task {task[-8:].lower()}", cwd=workdir)
        assert status.returncode == 0, status.stderr
        assert status.stdout == f"Task {task} (short.sh, started by admin): succeeded, exit code 0.\nstarted\n"


def _task_status(workdir: Path, task: str) -> str | None:
    with contextlib.closing(sqlite3.connect(workdir / ".herald" / "herald.db")) as db:
        row = db.execute("SELECT status FROM tasks WHERE task_id = ?", (task,)).fetchone()
    return row[0] if row else None


def test_a_port_in_use_is_a_one_line_error(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = herald("run", "--port", str(port), cwd=workdir)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("herald: not starting: ") and f"127.0.0.1:{port} is already in use" in last


PEOPLE = """
[principals.admin]
roles = ["admin"]
"""


def test_audit_show_takes_a_limit_and_says_how_many_it_shows(workdir: Path) -> None:
    (workdir / "herald.toml").write_text(PEOPLE)
    for _ in range(3):
        assert herald("token", "issue", "admin", cwd=workdir).returncode == 0
    shown = herald("audit", "show", "--limit", "2", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == 2 and "token.issued" in shown.stdout
    assert "2 of 3 entries shown (the newest); --limit N shows more, --limit 0 all" in shown.stderr
    everything = herald("audit", "show", "--limit", "0", cwd=workdir)
    assert len(everything.stdout.splitlines()) == 3 and "3 of 3 entries shown" in everything.stderr


def test_check_refuses_a_file_that_is_not_a_rule_file_and_warns_about_an_empty_folder(workdir: Path) -> None:
    (workdir / "README.md").write_text("# not rules\n")
    readme = herald("check", "README.md", cwd=workdir)
    assert readme.returncode == 1
    assert readme.stderr.strip() == "README.md: not a rule file (rule files end in .rules)"
    (workdir / "empty").mkdir()
    empty = herald("check", "empty", cwd=workdir)
    assert "warning: no *.rules files in empty: Herald would do nothing" in empty.stderr


def test_a_config_typo_says_did_you_mean(workdir: Path) -> None:
    (workdir / "herald.toml").write_text('[principals.admin]\nrolez = ["admin"]\n[http]\nprot = 9000\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 2
    assert "principals.admin.rolez: unknown key; did you mean 'roles'?" in result.stderr
    assert "http.prot: unknown key; did you mean 'port'?" in result.stderr


def _wait_for_log(workdir: Path, text: str) -> str:
    deadline = time.monotonic() + 30
    while text not in (log := (workdir / "engine.log").read_text()):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{log[-3000:]}"
        time.sleep(0.1)
    return log


def test_a_config_typo_while_running_is_a_config_rejection_and_fixing_it_is_logged(workdir: Path) -> None:
    config = workdir / "herald.toml"
    config.write_text(PEOPLE)
    with running_herald(workdir, "--port", "0"):  # the watcher reloads on save
        config.write_text(PEOPLE.replace("roles", "rolez"))
        log = _wait_for_log(workdir, "config rejected: 1 error; still running version 1")
        assert "did you mean 'roles'?" in log and "rules rejected" not in log
        config.write_text(PEOPLE)
        _wait_for_log(workdir, "the problems reported before are fixed")


def test_fixing_a_broken_rule_file_while_running_is_logged(workdir: Path) -> None:
    rules = workdir / "rules" / "ops.rules"
    good = rules.read_text()
    with running_herald(workdir, "--port", "0"):
        rules.write_text(good + "on alert notify nowhere\n")
        log = _wait_for_log(workdir, "rules rejected")
        assert "unknown team 'nowhere'" in log
        rules.write_text(good)
        _wait_for_log(workdir, "the problems reported before are fixed")


@pytest.mark.parametrize("command", [["init"], ["fmt"], ["graph"], ["test"], ["check"]])
def test_every_config_option_says_what_it_is(command: list[str], workdir: Path) -> None:
    result = herald(*command, "--help", cwd=workdir)
    assert result.returncode == 0
    option = next(line for line in result.stdout.splitlines() if line.strip().startswith("--config FILE"))
    assert option.strip() != "--config FILE", result.stdout  # a description follows, on its line or the next


def test_check_knows_the_engines_limits_memory_cron_and_people(workdir: Path) -> None:
    (workdir / "herald.toml").write_text(PEOPLE)
    (workdir / "rules" / "limits.rules").write_text(
        "on command small require role admin run backup.sh sandboxed memory 64m\n"
        'on schedule cron "61 * * * *" notify ops\n'
        "on alert notify @nobody\n"
        'on schedule cron "0 0 31 2 *" notify @admin\n'
        "team night = @ghost\n")
    result = herald("check", cwd=workdir)
    assert result.returncode == 1
    err = result.stderr
    assert "rules/limits.rules:1:68: a memory limit of 64m is too small to start a container" in err
    assert "give at least 128m" in err  # the sandbox's own minimum, not the compiler's guess
    assert "rules/limits.rules:2:18: cron \"61 * * * *\": minute: '61' is outside 0-59" in err
    assert "rules/limits.rules:3:17: unknown person 'nobody'" in err
    assert "rules/limits.rules:4:18: cron \"0 0 31 2 *\": day of month: no month in the expression has that day" in err
    assert "rules/limits.rules:5:14: unknown person 'ghost'" in err
    assert "5 errors in 2 file(s)" in err


def test_check_refuses_a_rule_on_one_of_heralds_own_commands(workdir: Path) -> None:
    (workdir / "rules" / "own.rules").write_text('on command task reply "mine"\non command status reply "up"\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 1
    assert ("rules/own.rules:1:1: /task is one of Herald's own commands (/cancel, /help, /link, /task, /whoami); "
            "a rule on it would never run") in result.stderr
    assert "1 error in 2 file(s)" in result.stderr  # /status is free for rules


def test_the_examples_check_on_a_stock_install(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    assert herald("init", cwd=tmp_path).returncode == 0
    result = herald("check", "examples/rules", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
