"""Matrix: a bot account on any homeserver, through matrix-nio (docs/platforms/matrix.md).

Rooms are `matrix:!room id` or `matrix:#alias:server` (resolved at start), people `matrix:@user:server`. Commands
(`/backup now`, or `!backup now` where a client keeps leading slashes for itself) and plain messages arrive by
`/sync` long polling; notifications, replies and progress go out as `m.notice` messages edited in place. Matrix has
no buttons: notifications carry numbered choices, pressed by replying with the number or by reacting (1️⃣,
✅ Acknowledge, 🔕 Mute 1h).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from engine.plugin import ConnectorSpec, IntegrationContext, Manifest, Unload
from integrations.matrix.config import CAPABILITIES, PLATFORM, MatrixConfig, parse_address

log = logging.getLogger("herald.matrix")


class MatrixIntegration:
    manifest = Manifest(name=PLATFORM, description="Matrix rooms through a bot account on a homeserver",
                        provides=("trigger:command", "trigger:button", "trigger:message"),
                        config_model=MatrixConfig, needs_config=True,
                        connector=ConnectorSpec(platform=PLATFORM, parse_address=parse_address,
                                                capabilities=CAPABILITIES))

    async def setup(self, ctx: IntegrationContext) -> Unload:
        # matrix-nio and its crypto are imported only when Matrix is configured (they cost an engine ~12 MiB)
        from integrations.matrix import encryption
        from integrations.matrix.connector import MatrixConnector
        from integrations.matrix.session import Session
        from integrations.matrix.sync import Receiver

        config = ctx.integration_config(PLATFORM)
        assert isinstance(config, MatrixConfig)
        store_dir = config.store_dir or ctx.config.data_dir / "matrix-store"
        session = Session(config, ctx.store(PLATFORM), store_dir)
        connector = MatrixConnector(ctx, session)
        detach = ctx.register_connector(connector)

        async def upkeep() -> None:
            await encryption.upkeep(session)

        async def logged_in() -> None:  # the config's room aliases, and those used before, resolved at start
            targets = (target for team in ctx.config.teams.values() for target in team.targets)
            await connector.aliases.start(configured_aliases(targets))

        receiver = Receiver(ctx, session, connector, timeout_s=config.sync_timeout_s, encryption=config.encryption,
                            on_start=logged_in, after_sync=upkeep if config.encryption else None)
        ctx.spawn("matrix-sync", receiver.run)

        async def unload() -> None:
            await detach()
            await session.close()

        return unload


def configured_aliases(targets: Iterable[str]) -> list[str]:
    """The room aliases among the config's team targets (`targets = ["matrix:#ops:example.org"]`)."""
    return [target.partition(":")[2] for target in targets if target.startswith(f"{PLATFORM}:#")]


integration = MatrixIntegration()
