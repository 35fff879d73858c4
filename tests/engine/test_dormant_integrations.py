"""An installed platform that needs credentials stays off until the config has its section, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.plugin import ConnectorSpec, Manifest, discover
from engine.plugin.discovery import active_integrations, validate_integrations
from engine.testing import running_engine


class _Token(BaseModel):
    token: str


class _Platform:
    manifest = Manifest(name="pager", description="a platform that needs a token", config_model=_Token,
                        connector=ConnectorSpec(platform="pager", parse_address=lambda text: text),
                        needs_config=True)

    def __init__(self) -> None:
        self.set_up = 0

    async def setup(self, ctx: object):  # type: ignore[no-untyped-def]
        self.set_up += 1

        async def unload() -> None:
            return None

        return unload


def _config(tmp: Path, **raw: object) -> Config:
    (tmp / "rules").mkdir(exist_ok=True)
    return Config.model_validate({"data_dir": "data", "rules_dir": "rules", "http": {"port": 0}, **raw}).resolved(tmp)


async def test_an_unconfigured_platform_is_not_set_up_and_its_config_is_not_required(tmp_path: Path) -> None:
    platform = _Platform()
    config = _config(tmp_path)
    assert platform not in active_integrations(config, [platform])
    validate_integrations(config, [*discover(), platform])  # no "integrations.pager.token: field required"
    async with running_engine(config, integrations=[*discover(), platform]) as engine:
        assert "pager" not in engine.connectors
    assert platform.set_up == 0


async def test_a_configured_platform_is_set_up_and_validated(tmp_path: Path) -> None:
    platform = _Platform()
    with pytest.raises(ConfigError, match=r"integrations\.pager\.token: Field required"):
        validate_integrations(_config(tmp_path, integrations={"pager": {}}), [platform])
    async with running_engine(_config(tmp_path, integrations={"pager": {"token": "t"}}),
                              integrations=[*discover(), platform]) as engine:
        assert "pager" in engine.connectors
    assert platform.set_up == 1


def test_an_address_on_an_unconfigured_platform_says_how_to_turn_it_on(tmp_path: Path) -> None:
    config = _config(tmp_path, teams={"ops": {"targets": ["pager:night"]}})
    with pytest.raises(ConfigError, match=r"teams\.ops\.targets: 'pager:night': the pager connector is installed "
                                          r"but not configured \(add an \[integrations\.pager\] section\)"):
        validate_integrations(config, [*discover(), platform := _Platform()])
    assert platform.set_up == 0
