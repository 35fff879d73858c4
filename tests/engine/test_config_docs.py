"""The configuration reference is real: its example validates against the config model, and a typo is an error."""

from __future__ import annotations

import re
import tomllib

import pytest
from pydantic import ValidationError

from engine.core.config import Config
from tests.support import REPO


def _example() -> dict:
    text = (REPO / "docs" / "configuration.md").read_text()
    return tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]


def test_the_documented_example_is_a_valid_config() -> None:
    config = Config.model_validate(_example())
    assert config.principals["alice"].roles == ["admin"] and config.teams["ops"].members == ["alice"]


def test_a_misspelt_key_is_an_error_not_a_default() -> None:
    raw = _example()
    raw["http"]["prot"] = raw["http"].pop("port")
    with pytest.raises(ValidationError, match="prot"):
        Config.model_validate(raw)
