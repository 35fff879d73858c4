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


CONFIG = """
[principals.admin]
roles = ["admin"]

[principals.bob]
roles = ["viewer"]
"""

MORE_RULES = """\
rule db-label:
  on alert label service = database
  notify ops saying "{alert.service} is {alert.severity}" with buttons ack, mute 1h

rule deploy:
  on command deploy <env: prod|staging>
  require role admin
  at most 2 per 1h
  run backup.sh sandboxed timeout 10m memory 256m args "{command.env}"

on alert when alert.labels.env = prod notify ops
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The default rules plus a rule with an explicit button list and a command with typed arguments; a config
    with an admin and a viewer."""
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    (tmp_path / "rules" / "more.rules").write_text(MORE_RULES)
    (tmp_path / "herald.toml").write_text(CONFIG)
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
    assert any(line.strip().startswith("no match    rules/ops.rules:5") and "severity" in line for line in lines), lines
    matched = herald("test", 'command "/backup now" as admin', cwd=workdir)
    assert "would run   rules/ops.rules:9: run backup.sh sandboxed" in matched.stdout, matched.stdout


def test_graph_lists_rules_by_trigger(workdir: Path) -> None:
    result = herald("graph", cwd=workdir)
    assert result.returncode == 0
    assert "on alert:" in result.stdout and "on command:" in result.stdout
    dot = herald("graph", "--dot", cwd=workdir)
    assert dot.returncode == 0 and dot.stdout.lstrip().startswith("digraph")


def test_graph_and_dry_run_show_an_explicit_button_list_as_written(workdir: Path) -> None:
    graph = herald("graph", cwd=workdir)
    assert graph.returncode == 0, graph.stderr
    assert 'do     notify ops saying "{alert.service} is {alert.severity}" with buttons ack, mute 1h' in graph.stdout
    assert "stage  at most 2 per 1h" in graph.stdout
    assert "run backup.sh sandboxed timeout 10m memory 256m" in graph.stdout
    assert "when   firing and alert.labels.env = prod\n" in graph.stdout  # not "and when alert..."
    assert herald("graph", "--dot", cwd=workdir).returncode == 0
    dry = herald("test", "alert", "severity=critical", "service=database", cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    assert "with buttons ack, mute 1h" in dry.stdout


def test_dry_run_matches_labels_as_the_engine_does(workdir: Path) -> None:
    # `herald send alert service=database` posts a label, and the engine matches `label service = database` on it.
    result = herald("test", "alert severity=critical service=database", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "would run   db-label (rules/more.rules:1)" in result.stdout, result.stdout
    assert "would run   rules/ops.rules:5" in result.stdout, result.stdout


def test_the_json_form_from_the_help_gets_the_defaults_of_the_inline_form(workdir: Path) -> None:
    (workdir / "alert.json").write_text('{"kind": "alert", "data": {"severity": "critical", "service": "database"}}')
    result = herald("test", "alert.json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "alert.status=firing" in result.stdout
    assert "would run   rules/ops.rules:5" in result.stdout, result.stdout


def test_dry_run_says_when_the_engine_would_reject_the_arguments_or_deny_the_caller(workdir: Path) -> None:
    rejected = herald("test", 'command "/deploy nowhere" as admin', cwd=workdir)
    assert "would reject deploy (rules/more.rules:5): env must be one of prod, staging, not 'nowhere'" \
        in rejected.stdout, rejected.stdout
    assert "would run" not in rejected.stdout
    accepted = herald("test", 'command "/deploy prod" as admin', cwd=workdir)
    assert "would run   deploy (rules/more.rules:5): run backup.sh sandboxed" in accepted.stdout, accepted.stdout
    assert "if these let it: at most 2 per 1h" in accepted.stdout
    denied = herald("test", 'command "/backup now" as bob', cwd=workdir)
    assert "would deny  rules/ops.rules:9: /backup requires role admin, which bob does not have" in denied.stdout
    unknown = herald("test", 'command "/backup now" as nobody', cwd=workdir)
    assert "refused: unknown principal 'nobody'" in unknown.stdout and "would run " not in unknown.stdout
    unlinked = herald("test", 'command "/backup now"', cwd=workdir)  # no api_principal in the config: no one
    assert "would deny  rules/ops.rules:9: /backup needs an account linked to a person" in unlinked.stdout


def test_dry_run_names_each_rule_once_in_rule_words(workdir: Path) -> None:
    result = herald("test", 'command "/backup now" as admin', cwd=workdir)
    line = next(line for line in result.stdout.splitlines() if "rules/ops.rules:9" in line)
    assert line.count("rules/ops.rules:9") == 1
    assert "requirerole" not in result.stdout and "(script=" not in result.stdout


def test_dry_run_of_an_unknown_kind_or_field_is_a_usage_error(workdir: Path) -> None:
    nonsense = herald("test", "nonsense", cwd=workdir)
    assert nonsense.returncode == 2
    assert "unknown event kind 'nonsense'" in nonsense.stderr
    typo = herald("test", "task", "scrpit=backup.sh", "status=failed", cwd=workdir)
    assert typo.returncode == 2 and "scrpit: unknown field" in typo.stderr
