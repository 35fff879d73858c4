"""The connector layer end to end, through a connector package defined in tests/ and installed as a plugin.

Loopchat (tests/connectors/) is served on loopback over real HTTP; the connector registers through the
`herald.integrations` entry-point group like any installed plugin, and passes the conformance kit without any
change to engine/.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.config import Config
from engine.plugin import discover
from engine.security import identity
from engine.testing import running_engine
from engine.testing.conformance import check_connector, eventually, post_alert
from tests.connectors.loopchat_server import LoopchatServer
from tests.connectors.support import LoopchatDriver, installed_plugin


async def test_a_plugin_connector_is_discovered_and_passes_the_conformance_kit(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        [loopchat] = [i for i in discover() if i.manifest.name == "loopchat"]
        await check_connector(tmp_path, loopchat, LoopchatDriver(platform_server), {"api_url": platform_server.url})
    assert platform_server.repeats == 0  # nothing was posted twice, even with the 429 and the outage


async def _engine_with_loopchat(tmp_path: Path, platform_server: LoopchatServer, **options: object):  # type: ignore[no-untyped-def]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ops.rules").write_text("on alert notify ops with buttons\n")
    config = Config.model_validate({
        "data_dir": "data", "rules_dir": "rules", "http": {"port": 0},
        "principals": {"alice": {"roles": ["admin"], "accounts": ["loopchat:U100"]}, "dave": {"roles": ["viewer"]}},
        "teams": {"ops": {"targets": ["loopchat:-100ops"]}},
        "integrations": {"loopchat": {"api_url": platform_server.url, **options}},
    }).resolved(tmp_path)
    return running_engine(config, integrations=discover())


async def test_where_a_platform_has_no_buttons_a_numbered_reply_presses_one(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with await _engine_with_loopchat(tmp_path, platform_server, buttons=False) as engine:
            await post_alert(engine, "NoButtons")

            async def shown() -> list:
                return platform_server.chat_messages("-100ops")

            [note] = await eventually(shown, "the notification")
            assert note.buttons == [] and note.text.endswith("Reply with a number: 1 Acknowledge · 2 Mute 1h")
            platform_server.inject_text("U100", "-100ops", "1")

            async def acknowledged() -> object:
                return await engine.db.call(lambda c: c.execute(
                    "SELECT acknowledged_by FROM alert_state WHERE fingerprint = 'fp-NoButtons'").fetchone())

            row = await eventually(acknowledged, "the acknowledgement")
    assert row["acknowledged_by"] == "alice"


async def test_an_account_links_itself_from_any_platform(tmp_path: Path, platform_server: LoopchatServer) -> None:
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        async with await _engine_with_loopchat(tmp_path, platform_server) as engine:
            token, _ = await engine.db.call(identity.issue_link_token, "dave", 600)
            platform_server.inject_text("U300", "U300", f"/link {token}")

            async def linked() -> bool:
                return any(m.text.startswith("Linked") for m in platform_server.chat_messages("U300"))

            await eventually(linked, "the answer to /link")
            platform_server.inject_text("U300", "U300", "/whoami")

            async def answered() -> list[str]:
                texts = [m.text for m in platform_server.chat_messages("U300")]
                return texts if any(t.startswith("You are") for t in texts) else []

            texts = await eventually(answered, "the answer to /whoami")
    assert "Linked: this loopchat account now acts for dave (roles: viewer)." in texts
    assert "You are dave (roles: viewer) on loopchat account U300." in texts
