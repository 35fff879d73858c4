"""`herald tui` with a person's own API token (issue 20 item 6): the TUI acts as that person, the audit names them,
and their roles decide, as in chat."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli.main import build_parser
from engine.cli.main import main as herald
from engine.server.app import Engine
from tests.tui.test_restart import rows, text_of, until
from tui.cli import build_app


def issue(config_file: Path, capsys: pytest.CaptureFixture[str], principal: str) -> str:
    assert herald(["token", "issue", principal, "--config", str(config_file)]) == 0
    return capsys.readouterr().out.strip()


def audit_of(engine: Engine, action: str) -> list[str]:
    return [entry.actor for entry in engine.bus.snapshot().audit if entry.action == action]


async def test_a_tui_with_alices_token_file_acts_as_alice(
    engine: Engine, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text(issue(config_file, capsys, "alice") + "\n")
    args = build_parser().parse_args(["tui", "--url", f"ws://127.0.0.1:{engine.port}", "--token-file",
                                      str(token_file), "--config", str(config_file)])
    app = build_app(args)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "engine: connected" in text_of(app, "#header"), "the connection")
        await pilot.press("slash", *"whoami", "enter")
        await until(pilot, lambda: "alice" in text_of(app, "#reply"), "alice's answer")
        await until(pilot, lambda: any("command.received" in row and "alice" in row for row in rows(app, "audit")),
                    "the audit entry")
    assert audit_of(engine, "command.received") == ["alice"]


async def test_a_viewers_token_from_the_environment_is_refused_an_admin_command(
    engine: Engine, config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_TOKEN", issue(config_file, capsys, "bob"))
    args = build_parser().parse_args(["tui", "--url", f"http://127.0.0.1:{engine.port}", "--config",
                                      str(config_file)])
    app = build_app(args)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "engine: connected" in text_of(app, "#header"), "the connection")
        await pilot.press("slash", *"backup now", "enter")
        await until(pilot, lambda: text_of(app, "#reply").startswith("Denied:"), "the refusal")
        assert "admin" in text_of(app, "#reply")
    assert audit_of(engine, "command.denied") == ["bob"]


def test_a_token_and_a_token_file_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tui", "--token", "x", "--token-file", "y"])
    assert "not allowed with argument" in capsys.readouterr().err
