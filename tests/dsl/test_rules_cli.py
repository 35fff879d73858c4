"""`herald fmt`, `herald test` and `herald graph` as users run them, on a copy of the default rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def herald(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    return tmp_path


def test_fmt_check_passes_on_the_default_rules_and_fmt_rewrites_a_messy_file(workdir: Path) -> None:
    assert herald("fmt", "--check", cwd=workdir).returncode == 0
    messy = workdir / "rules" / "messy.rules"
    messy.write_text("# keep me\non   alert severity critical   from database   notify ops with buttons\n")
    check = herald("fmt", "--check", cwd=workdir)
    assert check.returncode == 1 and "messy.rules" in check.stdout
    assert herald("fmt", cwd=workdir).returncode == 0
    assert messy.read_text() == "# keep me\non alert severity critical from database notify ops with buttons\n"
    assert herald("fmt", "--check", cwd=workdir).returncode == 0  # idempotent


def test_dry_run_says_what_matches_and_why_others_do_not(workdir: Path) -> None:
    result = herald("test", "alert severity=warning service=database", cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("no match rules/ops.rules:5") and "severity" in line for line in lines), lines
    matched = herald("test", 'command "/backup now" as admin', cwd=workdir)
    assert "match    rules/ops.rules:9" in matched.stdout and "run(script=backup.sh" in matched.stdout


def test_graph_lists_rules_by_trigger(workdir: Path) -> None:
    result = herald("graph", cwd=workdir)
    assert result.returncode == 0
    assert "on alert:" in result.stdout and "on command:" in result.stdout
    dot = herald("graph", "--dot", cwd=workdir)
    assert dot.returncode == 0 and dot.stdout.lstrip().startswith("digraph")
