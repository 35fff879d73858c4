"""What an idle engine has imported: modules only some configurations use are loaded when first used, not at start.

Every module an engine imports stays resident; with 10,000 idle chat sessions the idle engine is what sets Herald's
memory apart from a bare WebSocket server (benchmarks/chat_connections.py). `herald run` is started as a user
starts it, under `python -X importtime` (which names every module as it is imported, on stderr), and the modules
imported by the time it answers /healthz are read from that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ALICE_TOKEN, REPO, free_port, wait_until_ok

# Herald's own chat only: no platform integration configured, one rule.
CONFIG = f"""data_dir = "data"
rules_dir = "rules"
[principals.alice]
roles = ["admin"]
chat_tokens = ["{ALICE_TOKEN}"]
[teams.ops]
chat_rooms = ["ops"]
"""


def _imported(log: Path) -> set[str]:
    """The modules `-X importtime` reported in `log` so far (each line: `import time: self | cumulative | name`).
    A module loaded by importlib.import_module (an entry point's own module) is not reported; what it imports is."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


async def _modules_at_start(tmp_path: Path, *extra: str) -> set[str]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ops.rules").write_text("on alert notify ops\n")
    config = tmp_path / "herald.toml"
    config.write_text(CONFIG)
    log = tmp_path / "herald.log"
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "engine.cli", "run", "--config", str(config),
             "--port", str(port), *extra],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=out)
    try:
        await wait_until_ok(f"http://127.0.0.1:{port}/healthz", process=process, log=log, timeout_s=60)
        return _imported(log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _loaded(modules: set[str], packages: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & packages)


@pytest.mark.timeout(120)
async def test_an_engine_that_does_not_watch_never_imports_the_file_watcher(tmp_path: Path) -> None:
    """watchfiles (a Rust extension, anyio, multiprocessing: about 1 MiB) only serves the rule and config watcher."""
    modules = await _modules_at_start(tmp_path, "--no-watch")
    assert "engine.reload.reloader" in modules  # the probe sees the engine's own imports
    assert _loaded(modules, {"watchfiles"}) == []


@pytest.mark.timeout(120)
async def test_an_engine_that_watches_imports_the_file_watcher(tmp_path: Path) -> None:
    modules = await _modules_at_start(tmp_path)
    assert _loaded(modules, {"watchfiles"}) == ["watchfiles"]


@pytest.mark.timeout(120)
async def test_a_running_engine_never_imports_the_other_command_groups(tmp_path: Path) -> None:
    """`herald run` parses its own command only: the TUI's command group and the remote client (with the CLI's
    other groups, about 0.2 MiB) stay out of the engine."""
    modules = await _modules_at_start(tmp_path, "--no-watch")
    assert _loaded(modules, {"tui"}) == []
    assert sorted(modules & {"engine.client.remote", "engine.cli.alerts", "engine.cli.sandbox", "engine.cli.worker",
                             "engine.cli.security", "engine.cli.rules"}) == []


def test_every_other_command_line_still_sees_every_command_group(tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert all(command in listed for command in ("tui", "worker", "sandbox", "token", "fmt", "alerts")), listed


@pytest.mark.timeout(120)
async def test_a_platform_that_is_not_configured_loads_only_what_discovery_reads(tmp_path: Path) -> None:
    """Discovery reads every installed integration's manifest (its name, config model, address form and
    capabilities); the connector, the Gateway or polling loop and the rest load only with the platform's config."""
    modules = await _modules_at_start(tmp_path, "--no-watch")
    packages = {f"integrations.{platform}" for platform in ("telegram", "discord", "slack", "matrix")}
    loaded = {name for name in modules if ".".join(name.split(".")[:2]) in packages}
    # (Slack's and Telegram's render: the message length limits in their capabilities)
    read = packages | {f"{package}.config" for package in packages} | {f"{package}.render" for package in packages}
    assert sorted(loaded - read) == []
    assert {f"{package}.config" for package in packages} <= loaded  # their manifests were read


@pytest.mark.timeout(120)
async def test_an_engine_whose_rules_compile_never_imports_what_only_errors_and_image_builds_use(
        tmp_path: Path) -> None:
    """difflib serves "did you mean" in a rule's diagnostic; tarfile, `herald sandbox image build`."""
    modules = await _modules_at_start(tmp_path, "--no-watch")
    assert "dsl.diagnostics" in modules and "engine.sandbox.podman_service" in modules
    assert sorted(modules & {"difflib", "tarfile"}) == []
