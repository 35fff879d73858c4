"""The stateful-clause tests' config: the shared one plus two more admins for `by another admin`."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import Config, load_config
from tests.e2e.stateful.support import DAVE_TOKEN, ERIN_TOKEN


@pytest.fixture
def config(config_file: Path) -> Config:
    """The shared test config plus two more admins, dave and erin, for `by another admin`."""
    text = config_file.read_text() + f"""
[principals.dave]
roles = ["admin"]
chat_tokens = ["{DAVE_TOKEN}"]

[principals.erin]
roles = ["admin"]
chat_tokens = ["{ERIN_TOKEN}"]
"""
    config_file.write_text(text)
    return load_config(config_file)
