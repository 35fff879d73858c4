"""Group commit on a real SQLite file: concurrent writes share commits, each caller waits for its own durability,
one failing write fails only its caller, and a failing fsync fails its commit's callers without stopping the store."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.core import store
from engine.core.errors import DurabilityError
from engine.core.store import Database


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(tmp_path)
    await database.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    yield database
    await database.close()


def _insert(conn: sqlite3.Connection, key: int) -> int:
    conn.execute("INSERT INTO t (k, v) VALUES (?, 'x')", (key,))
    return key


async def test_concurrent_writes_share_commits_and_all_are_durable(db: Database, tmp_path: Path) -> None:
    results = await asyncio.gather(*(db.write(_insert, k) for k in range(500)))
    assert results == list(range(500))
    assert db.commits < 100  # grouped: far fewer transactions than writes
    with sqlite3.connect(tmp_path / "herald.db") as other:  # another connection sees every row
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 500


async def test_a_failing_write_fails_only_its_caller(db: Database) -> None:
    await db.write(_insert, 7)
    outcomes = await asyncio.gather(db.write(_insert, 1), db.write(_insert, 7), db.write(_insert, 2),
                                    return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    rows = await db.call(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")])
    assert rows == [1, 2, 7]


async def test_a_cancelled_caller_does_not_strand_the_others(db: Database) -> None:
    first = asyncio.ensure_future(db.write(_insert, 1))
    second = asyncio.ensure_future(db.write(_insert, 2))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 2
    await asyncio.sleep(0.05)
    rows = await db.call(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")])
    assert 2 in rows


async def test_deferred_writes_ride_with_the_next_awaited_write(db: Database) -> None:
    soon = [db.write_soon(_insert, k) for k in range(5)]
    assert await db.write(_insert, 5) == 5
    assert all(f.done() and f.result() == k for k, f in enumerate(soon))
    assert db.commits == 1  # the five deferred writes cost no transaction of their own
    rows = await db.call(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY rowid")])
    assert rows == [0, 1, 2, 3, 4, 5]  # in the order they were queued


async def test_a_deferred_write_alone_is_committed_soon(db: Database, tmp_path: Path) -> None:
    assert await asyncio.wait_for(db.write_soon(_insert, 1), timeout=1) == 1
    with sqlite3.connect(tmp_path / "herald.db") as other:
        assert other.execute("SELECT k FROM t").fetchall() == [(1,)]


async def test_closing_commits_what_is_deferred(tmp_path: Path) -> None:
    database = Database(tmp_path)
    await database.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    database.write_soon(_insert, 1)
    await database.close()
    with sqlite3.connect(tmp_path / "herald.db") as other:
        assert other.execute("SELECT k FROM t").fetchall() == [(1,)]


async def test_deferred_rows_go_in_with_the_next_commit(db: Database, tmp_path: Path) -> None:
    for k in range(3):
        db.defer_row("INSERT INTO t (k, v) VALUES (?, ?)", (k, "row"))
    db.defer_row("UPDATE t SET v = ? WHERE k = ?", ("updated", 1))
    assert await db.write(_insert, 10) == 10
    assert db.commits == 1
    with sqlite3.connect(tmp_path / "herald.db") as other:
        assert other.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [
            (0, "row"), (1, "updated"), (2, "row"), (10, "x")]
    db.defer_row("INSERT INTO t (k, v) VALUES (?, ?)", (11, "alone"))
    await db.flush()
    assert await db.call(lambda c: c.execute("SELECT v FROM t WHERE k = 11").fetchone()[0]) == "alone"


def _insert_kilobyte(conn: sqlite3.Connection, key: int) -> None:
    conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, "x" * 1024))


@pytest.mark.parametrize(("every_s", "copied"), [(0.0, True), (3600.0, False)])
async def test_the_wal_is_copied_into_the_database_file_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_s: float, copied: bool
) -> None:
    monkeypatch.setattr(store, "CHECKPOINT_EVERY_S", every_s)
    database = Database(tmp_path)
    await database.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    before = (tmp_path / "herald.db").stat().st_size
    for k in range(200):
        await database.write(_insert_kilobyte, k)
    grown = (tmp_path / "herald.db").stat().st_size - before
    await database.close()
    # Commits never checkpoint by themselves (that would block the loop); a thread of its own does, on a schedule.
    assert (grown > 50_000) is copied, grown
    with sqlite3.connect(tmp_path / "herald.db") as other:  # and nothing is lost either way
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 200


async def test_the_wal_does_not_grow_past_its_limit_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "WAL_LIMIT_BYTES", 256 * 1024)
    database = Database(tmp_path)
    await database.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    sizes = []
    for k in range(1000):  # ~1 MB of rows with no pause between commits
        await database.write(_insert_kilobyte, k)
        sizes.append((tmp_path / "herald.db-wal").stat().st_size)
    await database.close()
    assert max(sizes) < 256 * 1024 + 64 * 1024, max(sizes)  # the limit plus at most one commit
    with sqlite3.connect(tmp_path / "herald.db") as other:
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1000


class FailingDisk:
    """An fsync that fails (EIO, after a short stall, as a dying disk does) the next `failures` times it is called."""

    def __init__(self) -> None:
        self.failures = 0
        self.calls = 0
        self.stall_s = 0.0
        self._lock = threading.Lock()

    def fsync(self, fd: int) -> None:  # on the store's fsync thread
        with self._lock:
            self.calls += 1
            fail, self.failures = self.failures > 0, max(0, self.failures - 1)
        if fail:
            time.sleep(self.stall_s)
            raise OSError(5, "Input/output error")
        os.fsync(fd)


async def _rows(db: Database) -> list[int]:
    return await db.call(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")])


async def test_a_failed_fsync_fails_every_writer_of_its_commit_and_the_store_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHECKPOINT_EVERY_S", 3600.0)  # no background checkpoint muddles the WAL check
    disk = FailingDisk()
    db = Database(tmp_path, fsync=disk.fsync)
    await db.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    disk.failures, disk.stall_s = 1, 0.2
    failing = [asyncio.ensure_future(db.write(_insert, k)) for k in range(5)]
    deferred = db.write_soon(_insert, 5)
    await asyncio.sleep(0.05)  # the commit of 0-5 is in its (failing) fsync: these wait for the next commit
    behind = [asyncio.ensure_future(db.write(_insert, k)) for k in range(10, 13)]
    outcomes = await asyncio.wait_for(asyncio.gather(*failing, deferred, return_exceptions=True), 5)
    assert all(isinstance(o, DurabilityError) for o in outcomes), outcomes
    assert "Input/output error" in str(outcomes[0])
    # The writes that gathered behind the failed commit are committed without anyone writing again, and durably:
    # the WAL, which may have lost a frame, was copied into the database file and started anew.
    assert await asyncio.wait_for(asyncio.gather(*behind), 5) == [10, 11, 12]
    assert (tmp_path / "herald.db-wal").stat().st_size == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "herald.db", copy / "herald.db")  # the database file alone, without its WAL
    with sqlite3.connect(copy / "herald.db") as other:
        assert [r[0] for r in other.execute("SELECT k FROM t ORDER BY k")] == [0, 1, 2, 3, 4, 5, 10, 11, 12]
    assert await asyncio.wait_for(db.write(_insert, 20), 5) == 20  # and later writes work as before
    assert db.sync_failures == 1
    await db.close()


async def test_a_disk_that_keeps_failing_fails_each_commit_and_never_hangs(tmp_path: Path) -> None:
    disk = FailingDisk()
    db = Database(tmp_path, fsync=disk.fsync)
    await db.open(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    disk.failures = 3
    for k in range(3):
        with pytest.raises(DurabilityError):
            await asyncio.wait_for(db.write(_insert, k), 5)
    disk.failures = 1
    with pytest.raises(DurabilityError):  # a write that manages its own transaction learns it too
        await asyncio.wait_for(db.call(_insert, 3), 5)
    with pytest.raises(sqlite3.IntegrityError):  # the disk is back; a failing write keeps its own error
        await asyncio.wait_for(db.write(_insert, 0), 5)
    assert await asyncio.wait_for(db.write(_insert, 4), 5) == 4
    assert await _rows(db) == [0, 1, 2, 3, 4]  # committed, though never confirmed durable
    assert db.sync_failures == 4
    await db.close()
