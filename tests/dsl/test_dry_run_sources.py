"""`herald test SOURCE BODY.json`: a body saved from Grafana or a generic sender is read by that source's own reader,
its severities put on the configured scale as the engine does when alerts arrive, and an alert no rule matches is
said to go to the `[alerts] unmatched` team."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.dsl.test_rules_cli import herald
from tests.support import REPO

GRAFANA = REPO / "tests" / "integrations" / "payloads" / "grafana_firing.json"
CONFIG = """
[teams.ops]
chat_rooms = ["ops"]

[teams.triage]
chat_rooms = ["triage"]

[alerts]
severity_aliases = { page = "critical" }
unmatched = "triage"

[integrations.webhook.generic.uptime]
fingerprint = "id"
status = "state"
firing_values = ["down"]
resolved_values = ["up"]
severity = "level"
service = "check.service"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    (tmp_path / "herald.toml").write_text(CONFIG)
    return tmp_path


def test_a_grafana_body_is_read_as_the_hook_reads_it(workdir: Path) -> None:
    payload = json.loads(GRAFANA.read_text())
    payload["alerts"][0]["labels"].update(severity="page", service="database")
    (workdir / "grafana.json").write_text(json.dumps(payload))
    result = herald("test", "grafana", "grafana.json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("event: ")[1:]
    assert "alert.name=\"High memory usage\"" in first and "alert.severity=critical" in first
    assert "severity 'page' arrives as critical ([alerts] severity_aliases)" in first
    assert "would run   rules/ops.rules:5" in first, first
    assert "alert.fingerprint=bc97ff14869b13e3" in second
    assert "unmatched: the engine would notify triage ([alerts] unmatched)" in second, second


def test_a_generic_body_is_read_through_its_mapping(workdir: Path) -> None:
    (workdir / "check.json").write_text(json.dumps({"id": "chk-1", "state": "down", "level": "critical",
                                                    "check": {"service": "database"}}))
    result = herald("test", "generic/uptime", "check.json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "alert.service=database" in result.stdout and "would run   rules/ops.rules:5" in result.stdout

    (workdir / "broken.json").write_text(json.dumps({"id": "chk-1", "state": "down", "level": "critical"}))
    broken = herald("test", "generic/uptime", "broken.json", cwd=workdir)
    assert broken.returncode != 0
    assert "the generic/uptime hook would refuse this body (422): field 'check.service' (service) is missing" \
        in broken.stderr, broken.stderr


def test_an_unknown_source_is_named_with_the_known_ones(workdir: Path) -> None:
    (workdir / "x.json").write_text("{}")
    result = herald("test", "pingdom", "x.json", cwd=workdir)
    assert result.returncode != 0
    assert "no installed alert source is called 'pingdom' (sources: alertmanager, generic/uptime, grafana)" \
        in result.stderr


def test_an_unknown_severity_is_said_to_be_treated_as_the_most_severe(workdir: Path) -> None:
    result = herald("test", "alert severity=P1 service=web", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "severity 'P1' is not on the scale (info, warning, error, critical): the engine would warn and treat it " \
           "as critical" in result.stdout
