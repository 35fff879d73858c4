"""The audit log: append-only, hash-chained rows in the `audit_log` table of the data folder's database.

Each row's hash covers its own content and the previous row's hash, so editing a row breaks its hash and deleting
one breaks the chain at the next row. The hash is an HMAC-SHA256 under a key kept outside the database
(`<data>/audit.key`, engine.security.audit_anchor), stored as `hmac-sha256:<hex>`: without the key nobody can
recompute the chain after deleting or editing a row. The newest entry (the head) is kept outside the database too
(`<data>/audit.head`, and the engine's log), so deleting the newest entries, or all of them, is detected.

Logs written before keying keep their plain SHA-256 hashes (64 hex digits) and still verify. The first keyed entry
is an `audit.keyed` entry saying how many came before; its HMAC covers the last unkeyed hash, so the older part
cannot be rewritten either. After it, an unkeyed entry is an error (a downgrade).

What stays undetectable, and why, is in docs/security.md.

Entries hold decisions and facts, never secrets: callers pass principals, commands and ids, not tokens.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.client.snapshots import AuditView
from engine.core.bus import Bus
from engine.core.store import Database, transaction
from engine.security.audit_anchor import Anchor, Head, anchor_for

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
CREATE INDEX IF NOT EXISTS audit_alert ON audit_log(json_extract(data, '$.alert'))
    WHERE json_extract(data, '$.alert') IS NOT NULL;
"""

GENESIS = "0" * 64
KEYED = "hmac-sha256:"  # the prefix of a keyed entry's hash (an unkeyed one is 64 hex digits)
KEYING_STARTED = "audit.keyed"
ARCHIVED = "audit.archived"  # entries up to `last` moved to an archive file (engine.security.audit_archive)
HEAD_LOG_EVERY_S = 60.0  # how often at most the engine logs the head (an outside copy wherever the logs go)
log = logging.getLogger("herald.audit")


# Built once: json.dumps with options builds a new encoder per call, a fifth of an entry's cost. Same output.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_BODY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _canonical(prev_hash: str, seq: int, time: str, action: str, actor: str, data: str) -> bytes:
    return _CANONICAL.encode([prev_hash, seq, time, action, actor, data]).encode()


def unkeyed_hash(prev_hash: str, seq: int, time: str, action: str, actor: str, data: str) -> str:
    """An unkeyed entry's hash (logs written before keying)."""
    return hashlib.sha256(_canonical(prev_hash, seq, time, action, actor, data)).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, seq: int, time: str, action: str, actor: str, data: str) -> str:
    return KEYED + hmac.digest(key, _canonical(prev_hash, seq, time, action, actor, data), "sha256").hex()


def _summary(data: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in data.items())


def _view(row: sqlite3.Row) -> AuditView:
    return AuditView(
        seq=row["seq"], time=row["time"], action=row["action"], actor=row["actor"],
        summary=_summary(json.loads(row["data"])),
    )


def append_row(conn: sqlite3.Connection, action: str, actor: str, data: dict[str, Any]) -> AuditView:
    """Append one entry inside its own transaction, then move the head file (for the CLI, which has no group
    writer; its connection commits with synchronous=FULL, so the entry is durable when the transaction ends)."""
    anchor = anchor_for(conn)
    view, head = transaction(conn, lambda c: _append(c, anchor, action, actor, data))
    anchor.record(head)
    return view


def _append(conn: sqlite3.Connection, anchor: Anchor, action: str, actor: str,
            data: dict[str, Any]) -> tuple[AuditView, Head]:
    """Append one entry within the caller's transaction (reading the head and writing the next link together).
    Returns the entry and the new head, which the caller records once the transaction is durable."""
    written, head = append_entries(conn, anchor, [(action, actor, data)])
    return written[-1].view(), head  # the last: an `audit.keyed` entry may come first


@dataclass(frozen=True, slots=True)
class _Written:
    """An entry as written; its view (for the bus) is built only when somebody asks for it."""

    seq: int
    time: str
    action: str
    actor: str
    data: dict[str, Any]

    def view(self) -> AuditView:
        return AuditView.model_construct(seq=self.seq, time=self.time, action=self.action, actor=self.actor,
                                         summary=_summary(self.data))


def append_entries(conn: sqlite3.Connection, anchor: Anchor,
                 entries: list[tuple[str, str, dict[str, Any]]]) -> tuple[list[_Written], Head]:
    """Append `entries` in order within the caller's transaction: the chain's last link is read once, and the rows
    go in one statement. Returns what was written and the new head (recorded once the transaction is durable)."""
    anchor.check(conn)
    key = anchor.key()
    last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last["seq"], last["hash"]) if last else (0, GENESIS)
    rows: list[tuple[int, str, str, str, str, str, str]] = []
    written: list[_Written] = []
    if last is not None and not prev.startswith(KEYED):  # an older log: say where keying starts
        entries = [(KEYING_STARTED, "system", {"unkeyed_entries": seq, "note": "entries before this one have "
                                               "unkeyed SHA-256 hashes"}), *entries]
    for action, actor, data in entries:
        seq += 1
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        body = _BODY.encode(data)
        digest = keyed_hash(key, prev, seq, time, action, actor, body)
        rows.append((seq, time, action, actor, body, prev, digest))
        written.append(_Written(seq, time, action, actor, data))
        prev = digest
    conn.executemany(
        "INSERT INTO audit_log (seq, time, action, actor, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return written, Head(seq, prev)


class _Batch:
    """The entries `append_soon` gathered for one commit, in the order they came. Once its write has run, later
    entries start the next batch; a write retried after a rollback appends the same entries again."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []


class AuditLog:
    """The engine's audit log: entries are appended in group commits and, once durable, published on the bus (the
    TUI's and the API stream's audit pane) and their head written to the head file."""

    def __init__(self, db: Database, bus: Bus) -> None:
        self._db = db
        self._bus = bus
        self._anchor = Anchor(db.path.parent)
        self._head: Head | None = None  # the newest durable head, to be written to the head file
        self._written: Head | None = None
        self._writing: asyncio.Future[None] | None = None
        self._logged = 0.0
        self._batch: _Batch | None = None  # entries of `append_soon` waiting for their commit

    async def append(self, action: str, actor: str, **data: Any) -> AuditView:
        """Append an entry and return it once it is durable (published on the bus by then)."""
        view, head = await self._db.write(_append, self._anchor, action, actor, data)
        self._advance(head)
        self._bus.publish(view)
        return view

    def append_soon(self, action: str, actor: str, **data: Any) -> None:
        """Queue an entry for the next group commit without waiting for it. Commits keep their order, so the entry
        is durable no later than any write awaited after this call (use it when an awaited write follows before
        anything leaves the engine). The entries queued before one commit are appended together, in order: one
        read of the chain's last link and one statement for all of them (an alert's entries are the engine's most
        frequent write). A failure is logged by the store."""
        batch = self._batch
        if batch is None:
            self._batch = batch = _Batch()
            self._db.write_soon(self._append_batch, batch).add_done_callback(self._batch_committed)
        batch.entries.append((action, actor, data))

    def _append_batch(self, conn: sqlite3.Connection, batch: _Batch) -> tuple[list[_Written], Head]:
        if self._batch is batch:
            self._batch = None
        return append_entries(conn, self._anchor, batch.entries)

    def _batch_committed(self, done: asyncio.Future[tuple[list[_Written], Head]]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # logged by the store
        written, head = done.result()
        self._advance(head)
        for entry in written:
            self._bus.publish_lazy(AuditView, entry.seq, entry.view)

    async def of_alert(self, fingerprint: str, limit: int = 500) -> list[dict[str, Any]]:
        """An alert's history as the audit holds it, oldest first (the newest `limit`): received, notified where,
        pressed, muted, escalated, silenced, resolved."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT * FROM (SELECT seq, time, action, actor, data FROM audit_log "
            "WHERE json_extract(data, '$.alert') = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (fingerprint, limit)).fetchall())
        return [{"seq": row["seq"], "time": row["time"], "action": row["action"], "actor": row["actor"],
                 "data": json.loads(row["data"])} for row in rows]

    async def recent(self, limit: int) -> list[AuditView]:
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        )
        return [_view(row) for row in reversed(rows)]

    def _advance(self, head: Head) -> None:
        """A commit made `head` durable: have it written to the head file, and log it now and then."""
        if self._head is not None and head.seq <= self._head.seq:
            return
        self._head = head
        now = time.monotonic()
        if now - self._logged >= HEAD_LOG_EVERY_S:
            self._logged = now
            log.info("audit head %s (check later with: herald audit verify --expect-head %s)", head, head)
        self._write_head()

    def _write_head(self) -> None:
        """Write the newest head off the loop (an fsync), one write at a time: heads that arrive meanwhile are
        coalesced, and the end of a write starts the next."""
        head = self._head
        if self._writing is not None or head is None or head == self._written:
            return
        self._writing = asyncio.get_running_loop().run_in_executor(None, self._anchor.record, head)
        self._writing.add_done_callback(functools.partial(self._head_written, head))

    def _head_written(self, head: Head, done: asyncio.Future[None]) -> None:
        self._writing = None
        self._written = head  # on failure too: the next entry tries again, rather than this one forever
        if not done.cancelled() and done.exception() is not None:
            log.error("could not write the audit head file", exc_info=done.exception())
            return
        self._write_head()
