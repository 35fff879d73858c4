"""The outbox forgets finished rows past their week, on a real SQLite file: sent and failed rows made before the
cut-off go, in chunks; a row still pending never goes, however old; rows of the last week stay (their references let
an acknowledgement edit the alert's messages)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from engine.core.store import Database
from engine.delivery import outbox
from engine.delivery.message import Conversation, Message, MessageRef
from engine.delivery.outbox import KEEP_DONE_S, Outbox, Outgoing

DAY_S = 86400.0


async def test_finished_rows_past_their_week_are_forgotten_and_pending_ones_never(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    db = Database(tmp_path)
    await db.open([outbox.SCHEMA, outbox.migrate])
    try:
        box = Outbox(db)
        to = Conversation(platform="chat", chat="@alice")
        items = await box.put([Outgoing(key=f"notify/{n}", to=to, message=Message(kind="notification", text=f"{n}"))
                               for n in range(12)])
        for item in items:
            if item.key != "notify/1":  # one stays pending, its platform down for more than a week
                status = "failed" if item.key == "notify/2" else "sent"
                await box.finish(item, status, ref=MessageRef(platform="chat", chat="@alice", id=item.key))
        old = time.time() - KEEP_DONE_S - DAY_S
        await db.write(lambda conn: conn.execute(  # the first eight were made and finished eight days ago
            "UPDATE outbox SET created = ?, done = CASE WHEN done IS NULL THEN NULL ELSE ? END WHERE seq <= ?",
            (old, old, items[7].seq)))

        assert await box.prune(chunk=3) == 7

        def keys(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("SELECT key FROM outbox ORDER BY seq")]

        assert await db.call(keys) == ["notify/1", *(f"notify/{n}" for n in range(8, 12))]
        assert await box.ref_of("notify/9") == MessageRef(platform="chat", chat="@alice", id="notify/9")
        assert [item.key for item in await box.pending()] == ["notify/1"]
        assert await box.prune() == 0
        assert await box.prune(now=time.time() + KEEP_DONE_S + DAY_S) == 4  # a week on: the rest, still not pending
        assert await db.call(keys) == ["notify/1"]
    finally:
        await db.close()
