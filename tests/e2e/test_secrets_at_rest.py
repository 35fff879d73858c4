"""Secrets at rest, with `herald run` as a separate process under the usual umask 022: every file in the data folder
is created 0600 (an older install's 0644 files are closed at start), `herald run` refuses a data folder that group
or others may read, write or enter (naming the chmod that fixes it), and a link token pasted into `/link` is stored
nowhere: not in the events table, not in any file of the data folder."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.config import Config
from engine.testing import ChatClient
from tests.support import REPO, free_port, wait_until_ok

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
DEVICE = "a-laptop-secret-for-linking-0123"


def _umask_022() -> None:
    os.umask(0o022)


def _herald(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=ENV, preexec_fn=_umask_022)


def _modes(folder: Path) -> dict[str, str]:
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(folder.iterdir())}


async def _link_twice(port: int, token: str) -> None:
    """Link a device account with `token`, then replay it; check both answers and that the link holds."""
    async with ChatClient.connect(f"ws://127.0.0.1:{port}/chat", DEVICE) as device:
        for text, expected in ((f"/link {token}", "Linked: this chat account now acts for bob (roles: viewer)."),
                               (f"/link {token}", "Link refused: already used."),
                               ("/whoami", "You are bob (roles: viewer)")):
            msg = await device.say(text)
            reply = await device.wait_for(lambda f, m=msg: f.get("in_reply_to") == m and f["type"] == "reply")
            assert reply["text"].startswith(expected)


async def test_data_files_are_private_and_a_link_token_is_stored_nowhere(
    tmp_path: Path, config_file: Path, config: Config
) -> None:
    data = config.data_dir
    data.mkdir(mode=0o700)
    for name in ("herald.db", "api-token"):  # as an older version left them
        (data / name).touch(mode=0o644)
        (data / name).chmod(0o644)
    port = free_port()
    engine = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(config_file), "--port",
                               str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=ENV, preexec_fn=_umask_022)
    try:
        await wait_until_ok(f"http://127.0.0.1:{port}/healthz", process=engine)
        issued = _herald("identity", "link", "bob", "--config", str(config_file), cwd=tmp_path)
        assert issued.returncode == 0, issued.stderr
        token = re.search(r"^/link (\S+)$", issued.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
        await _link_twice(port, token)
        modes_while_running = _modes(data)  # -wal and -shm exist while the engine runs
    finally:
        engine.send_signal(signal.SIGTERM)
        log, _ = engine.communicate(timeout=30)

    assert {"herald.db-wal", "herald.db-shm", "api-token"} <= set(modes_while_running)
    assert set(modes_while_running.values()) == {"0o600"}, modes_while_running
    assert set(_modes(data).values()) == {"0o600"}, _modes(data)
    assert oct(stat.S_IMODE(data.stat().st_mode)) == "0o700"
    stored = {p.name: p.read_bytes() for p in data.iterdir()}
    assert [name for name, content in stored.items() if token.encode() in content] == []
    assert token not in log


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770])
def test_herald_run_refuses_a_data_folder_others_can_reach(tmp_path: Path, config_file: Path, config: Config,
                                                           mode: int) -> None:
    config.data_dir.mkdir()
    config.data_dir.chmod(mode)
    result = _herald("run", "--config", str(config_file), "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"config error: the data folder {config.data_dir} is open to others (mode {mode:04o})" in result.stderr
    assert f"chmod 700 {config.data_dir}" in result.stderr
    assert not (config.data_dir / "herald.db").exists()  # refused before anything was written
