"""An integration's credentials: inline, by environment variable or by a private file; every mistake named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError, model_validator

from engine.core.config import Config
from engine.plugin import check_secret, read_secret


class _Bot(BaseModel):
    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token(self) -> _Bot:
        check_secret(self, "token")
        return self


def test_each_source_gives_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("HERALD_TEST_TOKEN", "from-env")
    assert read_secret(_Bot(token=SecretStr("inline")), "token") == "inline"
    assert read_secret(_Bot(token_env="HERALD_TEST_TOKEN"), "token") == "from-env"
    assert read_secret(_Bot(token_file=secret), "token") == "from-file"


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "token is required: set token, token_env"),
    ({"token": "a", "token_env": "B"}, "set one of token, token_env, not several"),
    ({"token_env": "HERALD_TEST_UNSET_VARIABLE"}, "the environment variable HERALD_TEST_UNSET_VARIABLE is not set"),
    ({"token_file": "/nonexistent/token"}, "token_file: cannot read /nonexistent/token"),
])
def test_a_missing_or_ambiguous_secret_is_a_config_error(raw: dict, message: str) -> None:
    os.environ.pop("HERALD_TEST_UNSET_VARIABLE", None)
    with pytest.raises(ValidationError, match=message):
        _Bot.model_validate(raw)


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("t")
    secret.chmod(0o644)
    with pytest.raises(ValidationError, match="can be read by others .mode 644.; chmod 600 it"):
        _Bot(token_file=secret)


def test_an_integrations_file_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    config = Config.model_validate({"integrations": {"bot": {"token_file": "secrets/bot", "store_dir": "keys",
                                                             "name": "x"}}}).resolved(tmp_path)
    assert config.integrations["bot"] == {"token_file": str(tmp_path / "secrets/bot"),
                                          "store_dir": str(tmp_path / "keys"), "name": "x"}
