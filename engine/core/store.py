"""The one door to SQLite: a single connection used on the event loop, with group commit and the fsync on a thread.

Statements run on the loop itself (they take microseconds; a thread hop per commit cost more than the statements, and
the hop's wait for the interpreter lock under load made every commit slow); only what blocks for long, the fsync that
makes a commit durable, runs on a thread of its own (and checkpoints on another), and the loop serves other requests
meanwhile. The database is in WAL mode with synchronous=NORMAL, and every commit is followed by an fsync of the WAL
before anyone is told it is done: the same guarantee as synchronous=FULL, with the wait moved off the loop. Writes go
through `Database.write`: writes that arrive while a commit is in progress are gathered and committed together in the
next transaction, so under load one fsync makes many writes durable (group commit), and each caller still learns only
after its own write is durable. Bookkeeping nobody waits on (`write_soon`; `defer_row` for single rows such as an
event marked handled or a trace row) does not start a commit of its own: it rides with the next awaited write, or is
committed after at most `DEFERRED_S` when none comes, so it costs no fsync of its own under load.

A failed fsync (a disk error) is not survived by guessing: every write of that commit, awaited or deferred, gets a
`DurabilityError`, and the store goes on. Its WAL is no longer trusted (after an error the kernel may have dropped
pages it could not write, and SQLite stops replaying a WAL at its first bad frame, which would take later commits
with it), so the next commit is answered only after a full checkpoint copied the whole WAL into the database file,
synced it, and started the WAL anew. Until that works, each commit fails the same way; nothing waits forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engine.core import private
from engine.core.errors import DurabilityError

T = TypeVar("T")

DB_NAME = "herald.db"
CHECKPOINT_EVERY_S = 1.0  # how often, while writes go on, the WAL is copied into the database file (off the loop)
WAL_LIMIT_BYTES = 16 << 20  # past this, the loop truncates the WAL between two commits
DEFERRED_S = 0.02  # the longest a `write_soon` waits for a commit to ride with
log = logging.getLogger("herald.store")


def connect(path: Path) -> sqlite3.Connection:
    """Open the data folder's database with the settings every user of it relies on."""
    private.prepare_database(path)  # 0600 before SQLite creates it (and its -wal and -shm, which take its mode)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an accepted event must survive a power cut
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA cache_size=-512")  # 512 KiB, not 2 MB: writes touch the newest pages; ~1.5 MiB less resident
    return conn


class Database:
    """An SQLite file in the data folder, reached only through `call` and the writes from async code."""

    def __init__(self, data_dir: Path, *, fsync: Callable[[int], None] = os.fsync) -> None:
        """`fsync` syncs the WAL's file descriptor (tests pass one that fails, as a failing disk does)."""
        self.path = data_dir / DB_NAME
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-fsync")
        self._fsync = fsync
        self._wal_fd: int | None = None  # used on the fsync thread only
        self._wal_suspect = False  # a sync failed: the WAL must be checkpointed and restarted before the next answer
        self.sync_failures = 0  # failed attempts to make commits durable (for /metrics, /healthz and tests)
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-checkpoint")
        self._checkpointer: sqlite3.Connection | None = None  # used on the checkpoint thread only
        self._checkpointed = 0.0  # fsync thread: time.monotonic() of the last checkpoint asked for
        self._checkpoint_done: Future[None] | None = None  # fsync thread: the last checkpoint asked for
        self._wal_bytes = 0  # the WAL's size at the last fsync (written by the fsync thread, read on the loop)
        self._fsync_wal = False  # False when the file is not in WAL mode: then SQLite syncs each commit itself
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._awaited = 0  # how many of `_pending` a caller waits on (`write`, not `write_soon`)
        self._rows: dict[str, list[tuple[Any, ...]]] = {}  # `defer_row`: rows by statement, for one executemany each
        self._committer: asyncio.Future[None] | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self.commits = 0  # transactions committed by `write` (for benchmarks and tests)

    async def open(self, schemas: Iterable[str | Callable[[sqlite3.Connection], None]]) -> None:
        """Open the file and apply each schema: SQL text, or a function (a migration of an older file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=private.FOLDER_MODE)

        conn = self._conn = connect(self.path)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            conn.execute("PRAGMA synchronous=NORMAL")  # each commit is made durable by `_sync` instead
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on a thread, not inside a commit
            self._fsync_wal = True
        for schema in schemas:
            if callable(schema):
                schema(conn)
            else:
                conn.executescript(schema)
        await self._sync()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` and return its result; if it changed the database, only once that change
        is durable. For reads and for writes that manage their own transaction; keep them short (they run on the
        loop)."""
        conn = self._require()
        changes = conn.total_changes
        result = fn(conn, *args, **kwargs)
        if conn.total_changes != changes:
            await self._sync()
        return result

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, ...)` inside a transaction, grouped with concurrent writes; return once it is durable.

        `fn` must not open a transaction itself. If a grouped transaction fails, each of its writes is retried on its
        own, so one bad write fails only its own caller.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((lambda conn: fn(conn, *args, **kwargs), future))
        self._awaited += 1
        self._start_commit()
        return await future

    def write_nowait(self, fn: Callable[..., T]) -> asyncio.Future[T]:
        """Like `write`, but return at once: the commit starts now (it is not deferred like `write_soon`), and the
        future resolves once it is durable. For work that must not wait, yet must not be delayed either (an
        outgoing message: it is sent only once durable)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        self._awaited += 1
        self._start_commit()
        return future

    def write_soon(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue a write without waiting for it (bookkeeping nobody waits on, such as marking an event handled): it
        is committed with the next `write`, or within `DEFERRED_S`. Writes still commit in the order they were queued.
        A failure is logged; the returned future may be awaited or ignored."""
        future = _logged_future()
        self._pending.append((lambda conn: fn(conn, *args), future))
        self._defer_commit()
        return future

    def defer_row(self, sql: str, row: tuple[Any, ...]) -> None:
        """Queue one row for `sql` (one INSERT or UPDATE with ? placeholders), committed like a `write_soon` but
        cheaper: the rows of one statement go in one executemany, after the other writes of their commit. For records
        nobody waits on and whose order against other writes does not matter (a run's trace, an event handled)."""
        rows = self._rows.get(sql)
        if rows is None:
            self._rows[sql] = rows = []
        rows.append(row)
        self._defer_commit()

    async def flush(self) -> None:
        """Commit every queued write now, deferred ones included."""
        while self._pending or self._rows or (self._committer is not None and not self._committer.done()):
            self._start_commit()
            assert self._committer is not None
            await asyncio.shield(self._committer)

    def _start_commit(self) -> None:
        if self._committer is None or self._committer.done():
            # A task of its own, not the caller's: a cancelled caller must not strand the writes gathered behind it.
            self._committer = asyncio.ensure_future(self._commit_pending())

    def _defer_commit(self) -> None:
        if self._deferred is None:
            self._deferred = asyncio.get_running_loop().call_later(DEFERRED_S, self._deferred_due)

    def _deferred_due(self) -> None:
        self._deferred = None
        if self._pending or self._rows:
            self._start_commit()

    async def _commit_pending(self) -> None:
        while self._pending or self._rows:
            batch, self._pending = self._pending, []
            rows, self._rows = self._rows, {}
            self._awaited = 0
            works = [work for work, _ in batch]
            if rows:
                works.append(functools.partial(_execute_rows, rows))
                batch.append((works[-1], _logged_future()))
            outcomes = self._commit_batch(works)
            try:
                await self._sync()  # meanwhile the loop goes on, and writes that arrive gather for the next commit
                if self._wal_bytes > WAL_LIMIT_BYTES:
                    self._truncate_wal()
            except Exception as exc:  # every caller of this commit learns it, and the loop goes on with the next
                error = exc if isinstance(exc, DurabilityError) else DurabilityError(f"committing failed: {exc!r}")
                if error is not exc:
                    error.__cause__ = exc
                outcomes = [(False, error) if ok else (ok, value) for ok, value in outcomes]
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if not self._awaited:  # only deferred writes are left: they wait for company (or their timer)
                break
        if self._pending or self._rows:
            self._defer_commit()

    def _commit_batch(self, works: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        conn = self._require()
        try:
            results = transaction(conn, lambda c: [work(c) for work in works])
            self.commits += 1
            return [(True, result) for result in results]
        except Exception as exc:
            if len(works) == 1:
                return [(False, exc)]
        outcomes: list[tuple[bool, Any]] = []
        for work in works:  # isolate the failing write(s)
            try:
                outcomes.append((True, transaction(conn, work)))
                self.commits += 1
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    async def _sync(self) -> None:
        """Make every commit so far durable, or raise DurabilityError (see the module docstring)."""
        if not self._fsync_wal:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._syncer, self._fsync_wal_file)
            if self._wal_suspect:
                self._restart_wal()
        except Exception as exc:
            self.sync_failures += 1
            self._wal_suspect = True
            log.error("could not make commits to %s durable (%r); their writers are told so, and the next commit "
                      "first copies the WAL into the database file and starts it anew", self.path, exc)
            raise DurabilityError(f"the commit could not be made durable: {exc}") from exc

    def _restart_wal(self) -> None:
        """After a failed fsync: copy the whole WAL into the database file (SQLite syncs it) and start the WAL anew,
        so no later commit depends on a WAL frame the disk may have lost. Raises when that is not possible yet."""
        busy, _, _ = self._require().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise OSError("the WAL could not be checkpointed after a failed fsync (the database is busy)")
        self._wal_bytes = 0
        self._wal_suspect = False
        log.warning("%s is durable again: the WAL was copied into the database file and restarted", self.path)

    def _fsync_wal_file(self) -> None:  # on the fsync thread
        path = f"{self.path}-wal"
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != os.stat(path).st_ino:
            os.close(self._wal_fd)  # the WAL was made anew (never while this connection is open, but be sure)
            self._wal_fd = None
        if self._wal_fd is None:
            self._wal_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._fsync(self._wal_fd)
        except BaseException:
            os.close(self._wal_fd)  # the next sync starts from a fresh descriptor
            self._wal_fd = None
            raise
        self._wal_bytes = os.fstat(self._wal_fd).st_size
        every_s = CHECKPOINT_EVERY_S if self._wal_bytes < WAL_LIMIT_BYTES // 2 else CHECKPOINT_EVERY_S / 10
        if time.monotonic() - self._checkpointed >= every_s:
            self._checkpointed = time.monotonic()
            if self._checkpoint_done is None or self._checkpoint_done.done():
                self._checkpoint_done = self._checkpoints.submit(self._checkpoint)  # fsyncs never wait behind it

    def _checkpoint(self) -> None:  # on the checkpoint thread
        """Copy the WAL into the database file from this thread's own connection. PASSIVE never waits for the writer,
        which goes on committing on the loop; the next commit after a full checkpoint rewinds the WAL."""
        if self._checkpointer is None:  # timeout 0: if another checkpoint is running, skip this one
            self._checkpointer = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError:  # busy: the loop is truncating the WAL
            pass

    def _truncate_wal(self) -> None:
        """Bring the WAL back to nothing. Under steady writes the passive checkpoints copy the frames but the WAL
        never gets a quiet moment to start over, so it would keep growing; this pause on the loop is short, because
        those checkpoints already copied nearly everything."""
        row = self._require().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row[0] == 0:
            self._wal_bytes = 0

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self.flush()
            if self._deferred is not None:
                self._deferred.cancel()
                self._deferred = None
            self._conn.close()
            self._conn = None
        self._syncer.shutdown(wait=True)
        self._checkpoints.shutdown(wait=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None


def _execute_rows(rows: dict[str, list[tuple[Any, ...]]], conn: sqlite3.Connection) -> None:
    for sql, values in rows.items():
        conn.executemany(sql, values)


def _logged_future() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a deferred database write failed", exc_info=future.exception())


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` inside BEGIN IMMEDIATE ... COMMIT, rolling back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
