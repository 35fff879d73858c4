"""The durable outbox: every notification, reply and edit is journaled with an idempotency key before it is sent.

A row is written in the same group commit as the rest of the work that produced it and handed to the platform's
sender only once that commit is durable; the sender marks it sent (with the platform's message reference, so it can
be edited later) or failed. After a crash, rows still `pending` are sent again at start: what was confirmed is never
sent twice, and the one message a conversation had in flight at the moment of the crash is sent again with the same
key (platforms that deduplicate by key, such as Matrix transaction ids and Discord nonces, drop the repeat).

`OutboxStore` is the whole contract with storage. This one is SQLite; a Redis one for engines sharing the work would
keep one stream per platform read by a consumer group (XADD on put, XREADGROUP to claim, XACK on done, XAUTOCLAIM to
take over what a dead engine claimed), `SET key NX` for the idempotency keys and a hash for message references.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from engine.core.store import Database
from engine.delivery.message import Conversation, Message, MessageRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    platform TEXT NOT NULL,
    chat TEXT NOT NULL,
    thread TEXT,
    op TEXT NOT NULL,
    target TEXT,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    ref TEXT,
    error TEXT,
    created REAL NOT NULL,
    done REAL,
    event TEXT,
    alert TEXT
);
CREATE INDEX IF NOT EXISTS outbox_event ON outbox(event) WHERE event IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(platform, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_chat ON outbox(platform, chat, seq);
"""



def migrate(conn: sqlite3.Connection) -> None:
    """Give an outbox made before notifications followed their alert its `alert` column, and index it."""
    if "alert" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
        conn.execute("ALTER TABLE outbox ADD COLUMN alert TEXT")
    conn.execute("CREATE INDEX IF NOT EXISTS outbox_alert ON outbox(alert, seq) WHERE alert IS NOT NULL")


Op = Literal["send", "edit"]
Status = Literal["pending", "sent", "failed", "superseded"]
KEEP_DONE_S = 7 * 24 * 3600  # sent rows are kept this long: their references let alerts edit their messages
PRUNE_CHUNK = 2_000  # rows per delete when pruning: a few ms on the loop


@dataclass
class Outgoing:
    """One outbox row: a message on its way to a conversation (`op` send), or a new content for one (`op` edit,
    `target` the key of the message it replaces)."""

    key: str
    to: Conversation
    message: Message
    op: Op = "send"
    target: str | None = None
    seq: int = 0  # the outbox's order number, set when the row is stored
    attempts: int = 0


class OutboxStore(Protocol):
    def put(self, items: Sequence[Outgoing]) -> asyncio.Future[list[Outgoing]]:
        """Store new rows (a key already stored is skipped); resolves, with the rows that are new, once durable."""
        ...

    async def pending(self) -> list[Outgoing]: ...

    async def finish(self, item: Outgoing, status: Status, *, ref: MessageRef | None = None, error: str = "",
                     wait: bool = True) -> None: ...

    async def ref_of(self, key: str) -> MessageRef | None: ...

    async def history(self, platform: str, chats: Iterable[str], *, after: int, limit: int) -> list[Outgoing]: ...


class Outbox:
    """The SQLite `OutboxStore`, in the engine's database (its writes share the engine's group commits)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, items: Sequence[Outgoing]) -> asyncio.Future[list[Outgoing]]:
        rows = list(items)
        now = time.time()

        def _insert(conn: sqlite3.Connection) -> list[Outgoing]:
            new = []
            for item in rows:
                notification = item.op == "send" and item.message.kind == "notification"
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO outbox (key, platform, chat, thread, op, target, body, created, event, "
                    "alert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (item.key, item.to.platform, item.to.chat, item.to.thread, item.op, item.target,
                     item.message.model_dump_json(exclude_defaults=True), now,
                     item.message.meta.get("event") if notification else None,
                     item.message.meta.get("alert") if notification else None))
                if cursor.rowcount == 1:
                    item.seq = int(cursor.lastrowid or 0)
                    new.append(item)
            return new

        return self._db.write_nowait(_insert)

    async def pending(self) -> list[Outgoing]:
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT * FROM outbox WHERE status = 'pending' ORDER BY seq").fetchall())
        return [_outgoing(row) for row in rows]

    async def finish(self, item: Outgoing, status: Status, *, ref: MessageRef | None = None, error: str = "",
                     wait: bool = True) -> None:
        """Record how a row ended. `wait`: durable before it returns, so a restart never sends it again; else it
        rides with the next commit (for platforms that drop repeats themselves)."""
        row = (status, ref.model_dump_json() if ref else None, error[:500] or None, item.attempts, time.time(),
               item.seq)
        if wait:
            await self._db.write(lambda conn: conn.execute(_FINISH, row))
        else:
            self._db.defer_row(_FINISH, row)

    async def ref_of(self, key: str) -> MessageRef | None:
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT ref FROM outbox WHERE key = ?", (key,)).fetchone())
        return MessageRef.model_validate_json(row["ref"]) if row and row["ref"] else None

    async def history(self, platform: str, chats: Iterable[str], *, after: int, limit: int) -> list[Outgoing]:
        """What was sent or is on its way to these chats after `after` (a catch-up), oldest first, newest `limit`."""
        wanted = sorted(set(chats))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = await self._db.call(lambda conn: conn.execute(
            f"SELECT * FROM (SELECT * FROM outbox WHERE platform = ? AND chat IN ({marks}) AND seq > ? "
            "AND status IN ('pending', 'sent') ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (platform, *wanted, after, limit)).fetchall())
        return [_outgoing(row) for row in rows]

    async def notifications_of(self, event_id: str) -> list[Outgoing]:
        """The notifications sent (or on their way) about an event, one per conversation."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT * FROM outbox WHERE event = ? AND status IN ('pending', 'sent') ORDER BY seq",
            (event_id,)).fetchall())
        return [_outgoing(row) for row in rows]

    async def notifications_of_alert(self, fingerprint: str, limit: int = 50) -> list[Outgoing]:
        """The notifications sent (or on their way) about an alert, by any rule and any firing: the newest `limit`,
        oldest first."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT * FROM (SELECT * FROM outbox WHERE alert = ? AND status IN ('pending', 'sent') "
            "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (fingerprint, limit)).fetchall())
        return [_outgoing(row) for row in rows]

    async def close_alert(self, fingerprint: str) -> None:
        """The alert's episode is over (it resolved): its messages no longer follow it, so the next firing starts
        with messages of its own."""
        await self._db.write(lambda conn: conn.execute("UPDATE outbox SET alert = NULL WHERE alert = ?",
                                                       (fingerprint,)))

    async def pending_counts(self) -> dict[str, int]:
        """Rows not yet delivered, by platform (for /metrics; read through the pending rows' own index)."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT platform, count(*) AS n FROM outbox WHERE status = 'pending' GROUP BY platform").fetchall())
        return {row["platform"]: int(row["n"]) for row in rows}

    async def prune(self, now: float | None = None, *, chunk: int = PRUNE_CHUNK) -> int:
        """Forget finished rows older than `KEEP_DONE_S` (nothing pending is ever pruned); how many went. Rows are
        numbered in the order they were made, so only the rows made before the cut-off are read (no scan of the
        week kept), and they go `chunk` at a time, each delete its own short transaction on the loop."""
        cutoff = (now or time.time()) - KEEP_DONE_S
        newer = await self._db.call(lambda conn: conn.execute(
            "SELECT seq FROM outbox WHERE created >= ? ORDER BY seq LIMIT 1", (cutoff,)).fetchone())
        below = newer[0] if newer else 1 << 62
        gone = 0
        while True:
            count = await self._db.call(lambda conn: conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq < ? AND status != 'pending' "
                "AND done < ? LIMIT ?)", (below, cutoff, chunk)).rowcount)
            gone += count
            if count < chunk:
                return gone


_FINISH = "UPDATE outbox SET status = ?, ref = ?, error = ?, attempts = ?, done = ? WHERE seq = ?"


def _outgoing(row: sqlite3.Row) -> Outgoing:
    return Outgoing(key=row["key"], to=Conversation(platform=row["platform"], chat=row["chat"], thread=row["thread"]),
                    message=Message.model_validate(json.loads(row["body"])), op=row["op"], target=row["target"],
                    seq=int(row["seq"]), attempts=int(row["attempts"]))
