"""`herald alerts` against a running engine: list, show, acknowledge, unacknowledge and mute through the stream API,
with the same checks as a press in chat (issue 19)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.cli.main import main as herald
from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from engine.testing.conformance import eventually, post_alert
from tests.support import ALICE_TOKEN, chat_url


async def _herald(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(herald, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_list_show_ack_and_mute_an_alert_from_the_cli(
        config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_engine(config.model_copy(update={"api_principal": "alice"})) as engine:
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        await post_alert(engine, "DiskFull")
        await eventually(lambda: asyncio.sleep(0, engine.bus.snapshot().alerts), "the alert on the board")

        code, out, _ = await _herald(capsys, "alerts", "list", *where)
        assert code == 0 and "fp-DiskFull" in out and "DiskFull" in out and "critical" in out

        code, out, _ = await _herald(capsys, "alerts", "show", "DiskFull", *where)
        assert code == 0 and "fingerprint   fp-DiskFull" in out and "Acknowledge, Mute 1h" in out

        code, out, _ = await _herald(capsys, "alerts", "ack", "fp-Disk", *where)
        assert (code, out.strip()) == (0, "Acknowledged by alice.")
        code, _, err = await _herald(capsys, "alerts", "ack", "DiskFull", *where)
        assert code == 1 and "DiskFull: already acknowledged by alice" in err

        code, out, _ = await _herald(capsys, "alerts", "mute", "DiskFull", "--for", "1h", *where)
        assert code == 0 and out.startswith("Muted by alice until")
        code, out, _ = await _herald(capsys, "alerts", "silences", *where)
        assert code == 0 and "fp-DiskFull" in out and "alice" in out

        await engine.db.flush()
        code, out, _ = await _herald(capsys, "alerts", "show", "DiskFull", *where)
        history = [line.split()[2:4] for line in out.split("  history\n", 1)[1].splitlines()]
        assert code == 0 and [action for action, _ in history] == [
            "alert.received", "notification.unheard", "notification.unheard", "button.pressed", "button.pressed"]
        assert [actor for action, actor in history if action == "button.pressed"] == ["alice", "alice"]
        assert "button=ack" in out and "button=mute arg=1h" in out

        code, _, err = await _herald(capsys, "alerts", "show", "NoSuchAlert", *where)
        assert code == 1 and "no alert 'NoSuchAlert'" in err
        pressed = await engine.db.call(lambda c: c.execute(
            "SELECT actor, data FROM audit_log WHERE action = 'button.pressed' ORDER BY seq").fetchall())
    assert [row["actor"] for row in pressed] == ["alice", "alice"]


async def test_after_a_restart_the_board_still_shows_who_acknowledged_and_the_buttons_left(
        config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20 item 5: acknowledged and muted alerts are not shown as open after a restart, and their used
    buttons are not offered again (the TUI reads the same snapshot)."""
    config = config.model_copy(update={"api_principal": "alice"})
    async with running_engine(config) as engine:
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        for name in ("Acked", "Muted"):
            await post_alert(engine, name)
        await eventually(lambda: asyncio.sleep(0, len(engine.bus.snapshot().alerts) == 2), "both alerts")
        assert (await _herald(capsys, "alerts", "ack", "Acked", *where))[0] == 0
        assert (await _herald(capsys, "alerts", "mute", "Muted", *where))[0] == 0
    async with running_engine(config) as engine:
        alerts = {a.name: a for a in engine.bus.snapshot().alerts}
        assert alerts["Acked"].acknowledged_by == "alice"
        assert [b.label for b in alerts["Acked"].buttons] == ["Unacknowledge", "Mute 1h"]
        assert alerts["Muted"].muted_until is not None and [b.label for b in alerts["Muted"].buttons] == ["Acknowledge"]
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        code, out, _ = await _herald(capsys, "alerts", "mute", "Acked", *where)  # its Mute button still works
    assert code == 0 and out.startswith("Muted by alice until")


async def test_unacknowledge_from_the_cli_and_the_state_after_a_restart(
        config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`herald alerts unack`: an open alert says so; an acknowledged one is open again (Acknowledge offered again,
    the history says who), and stays so after a restart, where the Acknowledge button still works."""
    config = config.model_copy(update={"api_principal": "alice"})
    async with running_engine(config) as engine:
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        await post_alert(engine, "DiskFull")
        await eventually(lambda: asyncio.sleep(0, engine.bus.snapshot().alerts), "the alert on the board")
        code, _, err = await _herald(capsys, "alerts", "unack", "DiskFull", *where)
        assert code == 1 and "DiskFull: not acknowledged (it is open): nothing to unacknowledge" in err

        assert (await _herald(capsys, "alerts", "ack", "DiskFull", *where))[:2] == (0, "Acknowledged by alice.\n")
        code, out, _ = await _herald(capsys, "alerts", "show", "DiskFull", *where)
        assert "acknowledged  alice" in out and "buttons       Unacknowledge, Mute 1h" in out
        code, out, _ = await _herald(capsys, "alerts", "unack", "fp-Disk", *where)
        assert (code, out.strip()) == (0, "Unacknowledged by alice (was acknowledged by alice); the alert is open "
                                          "again.")
        await engine.db.flush()
        code, out, _ = await _herald(capsys, "alerts", "show", "DiskFull", *where)
        assert "acknowledged  no" in out and "buttons       Acknowledge, Mute 1h" in out
        assert "alert.unacknowledged     alice        was=alice" in out
    async with running_engine(config) as engine:
        [alert] = engine.bus.snapshot().alerts
        assert alert.acknowledged_by is None and [b.label for b in alert.buttons] == ["Acknowledge", "Mute 1h"]
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        code, out, _ = await _herald(capsys, "alerts", "ack", "DiskFull", *where)
        assert (code, out.strip()) == (0, "Acknowledged by alice.")
        status = await engine.alerts.status("fp-DiskFull")
    assert (status.acknowledged_by, status.unacknowledged_by) == ("alice", "alice")


async def test_silences_lists_herald_silences_by_labels(
        config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (config.rules_dir / "hush.rules").write_text(
        'rule hush:\n  on command hush <service: word>\n  silence alert where service = {command.service} for 1h\n')
    async with running_engine(config.model_copy(update={"api_principal": "alice"})) as engine, \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        where = ("--config", str(config_file), "--url", f"http://127.0.0.1:{engine.port}")
        code, out, _ = await _herald(capsys, "alerts", "silences", *where)
        assert code == 0 and "no silences by labels" in out
        await alice.say("/hush shop")
        await eventually(lambda: _made(engine), "the silence")
        code, out, _ = await _herald(capsys, "alerts", "silences", *where)
        [row] = [line for line in out.splitlines() if 'service="shop"' in line]
        assert code == 0 and "alice" in row and "hush" in row


async def _made(engine: Engine) -> int:
    return int(await engine.db.call(lambda c: c.execute("SELECT count(*) FROM herald_silences").fetchone()[0]))
