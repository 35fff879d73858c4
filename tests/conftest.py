"""Fixtures: a rules folder the sandbox user can read, a config with people and a team, a running engine on a
free loopback port, and a real Prometheus Alertmanager posting to it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.core.config import Config, load_config
from engine.server.app import Engine
from engine.testing import running_engine
from tests.connectors.loopchat_server import LoopchatServer
from tests.support import ALICE_TOKEN, BOB_TOKEN, REPO, Alertmanager, http_url, start_alertmanager


@pytest.fixture
def rules_dir() -> Iterator[Path]:
    """A copy of the default rules folder in a place the unprivileged sandbox user can read (pytest's tmp_path
    is mode 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="herald-rules-", dir="/tmp"))
    try:
        shutil.copytree(REPO / "rules", path, dirs_exist_ok=True)
        for p in [path, *path.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() or p.suffix == ".sh" else 0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


CONFIG_TOML = f"""
data_dir = "data"
rules_dir = "{{rules}}"

[http]
port = 0

[principals.alice]
roles = ["admin"]
chat_tokens = ["{ALICE_TOKEN}"]

[principals.bob]
roles = ["viewer"]
chat_tokens = ["{BOB_TOKEN}"]

[principals.carol]
roles = ["operator"]

[integrations.chat]
device_accounts = true  # the identity tests link device accounts
room_roles = ["admin", "operator", "viewer"]  # bob, a viewer, watches the ops room in many tests

[teams.ops]
members = ["alice"]
chat_rooms = ["ops"]

"""


@pytest.fixture
def config_file(tmp_path: Path, rules_dir: Path) -> Path:
    """The test installation's config as a real file, for CLI commands run against the same data folder."""
    path = tmp_path / "herald.toml"
    path.write_text(CONFIG_TOML.replace("{rules}", str(rules_dir)))
    return path


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file)


@pytest.fixture
async def platform_server() -> AsyncIterator[LoopchatServer]:
    """Loopchat, the test chat platform (tests/connectors/), serving its Bot API on a free loopback port."""
    server = LoopchatServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    async with running_engine(config) as engine:
        yield engine


ALERTMANAGER_CONFIG = """\
global: {{resolve_timeout: 5m}}
route:
  receiver: herald
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: herald
    webhook_configs:
      - url: {hook}
        send_resolved: true
"""


@pytest.fixture
async def alertmanager(tmp_path: Path, engine: Engine) -> AsyncIterator[Alertmanager]:
    """A real Prometheus Alertmanager whose webhook receiver is the engine's /hooks/alertmanager."""
    config = ALERTMANAGER_CONFIG.format(hook=f"{http_url(engine)}/hooks/alertmanager")
    async with start_alertmanager(tmp_path, config) as am:
        yield am
