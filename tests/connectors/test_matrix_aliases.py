"""Room aliases (`matrix:#ops:server`) as team targets, against the real Synapse (tests/connectors/synapse.py).

The team names its room by alias; Herald resolves it at start (`GET /directory/room/{roomAlias}`) and sends to the
room id, where bob (another real client) sees the notification and alice presses its buttons with a numbered reply
(and, on a second room, with a reaction).
An alias that does not exist is an error in the log at start and a failed (audited) notification, never silence;
once someone creates it, the next notification finds it (resolved again on first use).
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.testing.conformance import eventually, kit_engine, post_alert
from tests.connectors.matrix_proxy import MatrixProxy
from tests.connectors.matrix_support import (
    MatrixPeople,
    as_shown,
    fresh_driver,
    installed_with_matrix,
    matrix_kit,
)
from tests.connectors.synapse import Homeserver


async def test_a_team_named_by_room_alias_is_notified_in_its_room_and_a_numbered_reply_presses(
        tmp_path: Path, homeserver: Homeserver, people: MatrixPeople, proxy: MatrixProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    hs, bot = homeserver, homeserver.bot.user_id
    name, late = f"ops-{uuid.uuid4().hex[:8]}", f"late-{uuid.uuid4().hex[:8]}"
    room = await people.create_room(hs.alice, [bot, hs.bob.user_id], alias=name)
    await people.call(hs.bob, "POST", f"/_matrix/client/v3/join/{room}", {})
    driver = await fresh_driver(hs, people, proxy)
    driver.room = room  # where the kit's people look; the team below names it by its alias only
    config = matrix_kit(tmp_path, driver, hs, proxy)
    ops = config.teams["ops"].model_copy(update={"targets": [f"matrix:#{name}:localhost",
                                                             f"matrix:#{late}:localhost"]})
    config = config.model_copy(update={"teams": {"ops": ops}})

    caplog.set_level(logging.ERROR, logger="herald.matrix")
    async with kit_engine(config, installed_with_matrix()) as engine:
        await post_alert(engine, "AliasFired")

        async def seen_by_bob() -> list[Any]:
            shown = as_shown(await people.timeline(hs.bob, room), bot)
            return [m for m in shown if "AliasFired" in m.text]

        [note] = await eventually(seen_by_bob, "the notification, in bob's view of the alias's room")
        assert f"the room alias #{late}:localhost does not exist on the homeserver" in caplog.text
        await driver.press(driver.admin, room, note, "Acknowledge")  # alice replies "1" in the room

        async def acknowledged() -> list[Any]:
            return [m for m in await seen_by_bob() if "Acknowledged by alice" in m.text]

        [now] = await eventually(acknowledged, "the notification edited after alice's numbered reply")
        assert now.id == note.id and "1 Acknowledge" not in now.text

        async def failed() -> list[dict[str, Any]]:
            rows = await engine.db.call(lambda c: c.execute(
                "SELECT data FROM audit_log WHERE action = 'notification.failed'").fetchall())
            return [json.loads(row["data"]) for row in rows]

        [failure] = await eventually(failed, "the notification to the missing alias, audited as failed")
        assert failure["chat"] == f"#{late}:localhost"
        assert f"the room alias #{late}:localhost does not exist" in failure["error"]

        # The missing alias is created: the next notification resolves it on first use, and reaches its room.
        late_room = await people.create_room(hs.alice, [bot], alias=late)
        await post_alert(engine, "AliasLater")

        async def in_late_room() -> list[Any]:
            return [m for m in as_shown(await people.timeline(hs.alice, late_room), bot) if "AliasLater" in m.text]

        [later] = await eventually(in_late_room, "the next notification, in the newly created alias's room")
        driver.press_by_reaction = True  # this time a ✅ reaction on the notification presses Acknowledge
        await driver.press(driver.admin, late_room, later, "Acknowledge")

        async def later_acknowledged() -> list[Any]:
            return [m for m in await in_late_room() if "Acknowledged by alice" in m.text]

        await eventually(later_acknowledged, "the second notification acknowledged by a reaction")
