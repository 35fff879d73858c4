"""The audit log's group appends on a real SQLite file: entries queued together are chained in the order they came,
one commit holds them, they reach the bus once durable, and a write retried after a rollback chains them again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from engine.client.snapshots import AuditView
from engine.core.bus import Bus
from engine.core.store import Database
from engine.security.audit import SCHEMA, AuditLog
from engine.security.audit_verify import verify_chain


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    tmp_path.chmod(0o700)
    database = Database(tmp_path)
    await database.open([SCHEMA, "CREATE TABLE t (k INTEGER PRIMARY KEY)"])
    yield database
    await database.close()


def _rows(db: Database) -> list[tuple[int, str, dict[str, object]]]:
    with sqlite3.connect(db.path) as conn:
        return [(seq, action, json.loads(data))
                for seq, action, data in conn.execute("SELECT seq, action, data FROM audit_log ORDER BY seq")]


async def test_entries_queued_together_are_chained_in_order_in_one_commit(db: Database) -> None:
    bus = Bus()
    audit = AuditLog(db, bus)
    commits = db.commits
    for n in range(200):
        audit.append_soon("alert.received", "alertmanager", alert=f"fp{n}")
    await db.flush()
    assert db.commits == commits + 1
    assert _rows(db) == [(n + 1, "alert.received", {"alert": f"fp{n}"}) for n in range(200)]
    with sqlite3.connect(db.path) as conn:
        conn.row_factory = sqlite3.Row
        assert verify_chain(conn).ok
    published = bus.snapshot().audit
    assert [view.seq for view in published][-3:] == [198, 199, 200]
    assert isinstance(published[-1], AuditView) and published[-1].summary == "alert=fp199"


async def test_a_later_entry_starts_a_new_batch_and_awaited_entries_chain_with_them(db: Database) -> None:
    audit = AuditLog(db, Bus())
    audit.append_soon("a", "x")
    await db.flush()
    audit.append_soon("b", "x")
    view = await audit.append("c", "x")  # queued after "b": committed with it, after it
    audit.append_soon("d", "x")
    await db.flush()
    assert [action for _, action, _ in _rows(db)] == ["a", "b", "c", "d"]
    assert view.seq == 3
    with sqlite3.connect(db.path) as conn:
        conn.row_factory = sqlite3.Row
        assert verify_chain(conn).ok


async def test_a_batch_retried_after_another_write_failed_is_chained_once(db: Database) -> None:
    audit = AuditLog(db, Bus())
    for n in range(3):
        audit.append_soon("alert.received", "alertmanager", alert=f"fp{n}")

    def duplicate(conn: sqlite3.Connection) -> None:  # fails the grouped transaction: each write is retried alone
        conn.execute("INSERT INTO t (k) VALUES (1)")
        conn.execute("INSERT INTO t (k) VALUES (1)")

    with pytest.raises(sqlite3.IntegrityError):
        await db.write(duplicate)
    assert [seq for seq, _, _ in _rows(db)] == [1, 2, 3]
    with sqlite3.connect(db.path) as conn:
        conn.row_factory = sqlite3.Row
        assert verify_chain(conn).ok
