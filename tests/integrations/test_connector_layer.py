"""The connector layer end to end, through a connector package defined in tests/ and installed as a plugin.

Loopchat (tests/connectors/) is served on loopback over real HTTP; the connector registers through the
`herald.integrations` entry-point group like any installed plugin, and passes the conformance kit without any
change to engine/.
"""

from __future__ import annotations

from pathlib import Path


from engine.plugin import discover
from engine.testing.conformance import check_connector
from tests.connectors.loopchat_server import LoopchatServer
from tests.connectors.support import LoopchatDriver, installed_plugin


async def test_a_plugin_connector_is_discovered_and_passes_the_conformance_kit(
        tmp_path: Path, platform_server: LoopchatServer) -> None:
    with installed_plugin(tmp_path, "loopchat", "tests.connectors.loopchat:integration"):
        [loopchat] = [i for i in discover() if i.manifest.name == "loopchat"]
        await check_connector(tmp_path, loopchat, LoopchatDriver(platform_server), {"api_url": platform_server.url})
    assert platform_server.repeats == 0  # nothing was posted twice, even with the 429 and the outage
