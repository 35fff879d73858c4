"""The audit log: append-only, hash-chained rows in the `audit_log` table of the data folder's database.

Each row's hash covers its own content and the previous row's hash, so editing a row breaks its hash and deleting
one breaks the chain at the next row. (Truncating the newest rows is only detectable against an outside copy of the
head hash; `verify` reports the head so it can be kept elsewhere.)

Entries hold decisions and facts, never secrets: callers pass principals, commands and ids, not tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.client.snapshots import AuditView
from engine.core.store import Database, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

GENESIS = "0" * 64


def _digest(prev_hash: str, seq: int, time: str, action: str, actor: str, data: str) -> str:
    canonical = json.dumps([prev_hash, seq, time, action, actor, data], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _summary(data: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in data.items())


def _view(row: sqlite3.Row) -> AuditView:
    return AuditView(
        seq=row["seq"], time=row["time"], action=row["action"], actor=row["actor"],
        summary=_summary(json.loads(row["data"])),
    )


def append_row(conn: sqlite3.Connection, action: str, actor: str, data: dict[str, Any]) -> AuditView:
    """Append one entry inside its own transaction (for the CLI, which has no group writer)."""
    return transaction(conn, lambda c: append_entry(c, action, actor, data))


def append_entry(conn: sqlite3.Connection, action: str, actor: str, data: dict[str, Any]) -> AuditView:
    """Append one entry within the caller's transaction (reading the head and writing the next link together)."""
    last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
    time = datetime.now(UTC).isoformat(timespec="microseconds")
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = _digest(prev, seq, time, action, actor, body)
    conn.execute(
        "INSERT INTO audit_log (seq, time, action, actor, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, time, action, actor, body, prev, digest),
    )
    return AuditView(seq=seq, time=time, action=action, actor=actor, summary=_summary(data))


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, action: str, actor: str, **data: Any) -> AuditView:
        return await self._db.write(append_entry, action, actor, data)

    def append_soon(self, action: str, actor: str, **data: Any) -> asyncio.Future[AuditView]:
        """Queue an entry for the next group commit without waiting for it. Commits keep their order, so the entry
        is durable no later than any write awaited after this call (use it when an awaited write follows before
        anything leaves the engine)."""
        return self._db.write_soon(append_entry, action, actor, data)

    async def recent(self, limit: int) -> list[AuditView]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        )
        return [_view(row) for row in reversed(rows)]


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(conn: sqlite3.Connection) -> Verification:
    """Walk the whole chain; report the first entry whose hash, link or sequence number is wrong."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute("SELECT * FROM audit_log ORDER BY seq"):
        seq = row["seq"]
        if seq != expected_seq:
            return Verification(False, count, prev, expected_seq, f"entry {expected_seq} is missing (next is {seq})")
        if row["prev_hash"] != prev:
            return Verification(False, count, prev, seq, f"entry {seq} does not link to entry {seq - 1}")
        digest = _digest(prev, seq, row["time"], row["action"], row["actor"], row["data"])
        if digest != row["hash"]:
            return Verification(False, count, prev, seq, f"entry {seq} was altered (its hash does not match)")
        prev, expected_seq, count = digest, seq + 1, count + 1
    return Verification(True, count, prev)
