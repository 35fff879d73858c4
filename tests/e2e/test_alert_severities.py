"""`[alerts] severities` and `severity_aliases`: the rules compile against the configured scale, and an incoming
alert's severity is put on it where it arrives, so `severity=page` pages like `critical`, and a severity nobody
declared is reported (a warning and a counter) and treated as the most severe instead of matching nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.config import Config, load_config
from engine.core.errors import ConfigError
from engine.reload.rules import compile_paths
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, chat_url, http_url

ALIASES = """
[alerts]
severity_aliases = { page = "critical", ticket = "warning" }
"""
WEB_RULE = "on alert severity >= warning from web notify ops\n"


def _config(config_file: Path, extra: str) -> Config:
    config_file.write_text(config_file.read_text() + extra)
    return load_config(config_file)


async def _post(engine: Engine, labels: dict[str, str]) -> None:
    body = alert_payload(labels, summary=f"{labels.get('service')} is {labels.get('severity')}", resolved=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_url(engine)}/hooks/alertmanager", json=body) as response:
            assert response.status == 200, await response.text()


async def _metric(engine: Engine, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http_url(engine)}/metrics") as response:
            text = await response.text()
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def _journaled(engine: Engine) -> list[dict]:
    rows = await engine.db.call(lambda conn: conn.execute("SELECT body FROM events ORDER BY id").fetchall())
    return [json.loads(row["body"])["data"] for row in rows]


async def test_an_alias_is_matched_as_its_step_on_the_scale(config_file: Path, rules_dir: Path) -> None:
    (rules_dir / "web.rules").write_text(WEB_RULE)
    async with running_engine(_config(config_file, ALIASES)) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await _post(engine, {"severity": "page", "service": "database"})  # `severity critical from database`
        page = await alice.wait_for(lambda f: f["type"] == "notification" and "database" in f["text"], timeout=10)
        await _post(engine, {"severity": "Ticket", "service": "web"})  # `severity >= warning`, in any case
        ticket = await alice.wait_for(lambda f: f["type"] == "notification" and "web" in f["text"], timeout=10)
        assert "[CRITICAL]" in page["text"] and "[WARNING]" in ticket["text"]
        first, second = await _journaled(engine)
        assert (first["severity"], first["labels"]["severity"], first["labels"]["severity_raw"]) == (
            "critical", "page", "page")
        assert second["severity"] == "warning" and second["labels"]["severity_raw"] == "Ticket"
        assert await _metric(engine, "herald_alerts_unknown_severity_total") == 0


async def test_an_unknown_severity_is_reported_and_treated_as_the_most_severe(
        config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.engine")
    async with running_engine(_config(config_file, ALIASES)) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN, rooms=["ops"]) as alice:
        await _post(engine, {"alertname": "DbDown", "severity": "P1", "service": "database"})
        note = await alice.wait_for(lambda f: f["type"] == "notification", timeout=10)
        assert "DbDown" in note["text"]
        (data,) = await _journaled(engine)
        assert data["severity"] == "critical" and data["labels"]["severity_raw"] == "P1"
        assert await _metric(engine, "herald_alerts_unknown_severity_total") == 1
    (warning,) = [r.getMessage() for r in caplog.records if "unknown severity" in r.getMessage()]
    assert "DbDown" in warning and "'P1'" in warning and "info, warning, error, critical" in warning
    assert "page=critical" in warning


async def test_a_known_or_empty_severity_is_left_as_it_came(config: Config) -> None:
    async with running_engine(config) as engine:
        await _post(engine, {"severity": "critical", "service": "database"})
        await _post(engine, {"severity": "", "service": "web"})  # an empty label is no severity, not an unknown one
        known, empty = await _journaled(engine)
        assert known["severity"] == "critical" and "severity_raw" not in known["labels"]
        assert empty["severity"] == "" and "severity_raw" not in empty["labels"]
        assert await _metric(engine, "herald_alerts_unknown_severity_total") == 0


def test_the_rules_compile_against_the_configured_scale(config_file: Path, rules_dir: Path) -> None:
    config = _config(config_file, '[alerts]\nseverities = ["minor", "major", "critical"]\n')
    (rules_dir / "web.rules").write_text(WEB_RULE)  # `warning` is not on this scale
    result = compile_paths([rules_dir], config)
    assert result.graph is None
    assert [d.message for d in result.diagnostics if d.severity == "error"] == ["unknown severity 'warning'"]
    rendered = result.render_all()
    assert "web.rules:1:22: unknown severity 'warning'" in rendered
    assert "hint: severities: minor, major, critical" in rendered
    (rules_dir / "web.rules").write_text("on alert severity >= major from web notify ops\n")
    assert compile_paths([rules_dir], config).graph is not None


@pytest.mark.parametrize(("alerts", "problem"), [
    ('severities = []', "name at least one severity"),
    ('severities = ["info", "Info"]', "'Info' is not a lowercase word"),
    ('severities = ["info", "info"]', "info named twice"),
    ('severity_aliases = { page = "urgent" }', "severity_aliases.page: 'urgent' is not on the scale"),
    ('severity_aliases = { critical = "error" }', "severity_aliases.critical: 'critical' is already on the scale"),
    ('severity_aliases = { PAGE = "critical" }', "severity_aliases.PAGE: write aliases in lowercase"),
    ('severitys = ["info"]', "alerts.severitys: unknown key; did you mean 'severities'?"),
])
def test_a_bad_scale_is_a_config_error(config_file: Path, alerts: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(config_file, f"[alerts]\n{alerts}\n")
    assert problem in str(caught.value)


async def test_a_new_scale_and_the_rule_naming_it_arrive_in_one_reload(config_file: Path, rules_dir: Path) -> None:
    from tests.e2e.reload.support import engine_with_config_source

    async with engine_with_config_source(config_file, watch=False) as engine:
        config_file.write_text(config_file.read_text() + '[alerts]\nseverities = ["low", "high", "critical", "sev1"]\n'
                               'severity_aliases = { p1 = "sev1" }\n')
        (rules_dir / "sev.rules").write_text("on alert severity sev1 from web notify ops\n")
        view = await engine.reload()
        assert view.status == "reloaded" and view.needs_restart == [], view
        await _post(engine, {"severity": "P1", "service": "web"})
        (data,) = await _journaled(engine)
        assert data["severity"] == "sev1"
        assert await _metric(engine, "herald_alerts_unknown_severity_total") == 0
