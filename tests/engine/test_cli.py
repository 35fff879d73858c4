"""The `herald` command line as users run it: check, run (as a real process), send, and refusing broken rules."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
        assert sent.stdout.startswith('200 {"accepted": 1')
        assert (workdir / ".herald" / "herald.db").exists()
        assert oct((workdir / ".herald" / "api-token").stat().st_mode & 0o777) == "0o600"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Herald is ready" in out


def test_check_reports_bad_integration_sections_and_addresses_before_anything_runs(workdir: Path) -> None:
    (workdir / "herald.toml").write_text(
        '[principals.alice]\naccounts = ["telegram:1111111"]\n'
        '[teams.ops]\ntargets = ["chat:Not A Room"]\n'
        '[integrations.webhook]\nbogus = 1\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 2
    problems = result.stderr.strip()
    assert "integrations.webhook.bogus: unknown key" in problems
    assert "principals.alice.accounts: 'telegram:1111111': no connector for platform 'telegram'" in problems
    assert "teams.ops.targets: 'chat:Not A Room': a Herald chat room is a name like 'ops'" in problems


def test_a_rule_file_team_address_is_checked_by_its_connector_at_file_line_col(workdir: Path) -> None:
    (workdir / "rules" / "teams.rules").write_text('team night = chat "ops", chat "Night Shift!"\n')
    result = herald("check", cwd=workdir)
    assert result.returncode == 1
    assert "teams.rules:1:26: chat address 'Night Shift!': a Herald chat room is a name like 'ops'" in result.stderr
