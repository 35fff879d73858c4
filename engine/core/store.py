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

A disk that is full or failing (SQLite's "database or disk is full", an I/O error, ENOSPC) fails the writes it hits
with `StorageFull`, and `trouble` says why until a commit succeeds again; deferred rows that failed that way are kept
and ride with the next commit instead of being dropped. The engine refuses new work meanwhile and `probe`s the disk
until it takes writes again (engine.server.app).
"""

from __future__ import annotations

import asyncio
import errno
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
from engine.core.errors import DurabilityError, StorageFull

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

    def __init__(self, data_dir: Path, *, fsync: Callable[[int], None] = os.fsync, min_free_bytes: int = 0) -> None:
        """`fsync` syncs the WAL's file descriptor (tests pass one that fails, as a failing disk does);
        below `min_free_bytes` free on its disk the store reports trouble (see `check_space`)."""
        self.path = data_dir / DB_NAME
        self.min_free_bytes = min_free_bytes
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
        self._write_trouble: str | None = None  # why writes fail now; None once one succeeds
        self._space_trouble: str | None = None  # too little free space, as `check_space` last saw it

    async def open(self, schemas: Iterable[str | Callable[[sqlite3.Connection], None]]) -> None:
        """Open the file and apply each schema: SQL text, or a function (a migration of an older file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=private.FOLDER_MODE)
        if not self.check_space():
            raise StorageFull(f"the data disk has too little room: {self.trouble}")
        try:
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
        except Exception as exc:  # a full disk is worth waiting for (the caller may); anything else is not
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise self._classified(exc) from None
        await self._sync()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` and return its result; if it changed the database, only once that change
        is durable. For reads and for writes that manage their own transaction; keep them short (they run on the
        loop)."""
        conn = self._require()
        changes = conn.total_changes
        try:
            result = fn(conn, *args, **kwargs)
        except Exception as exc:
            raise self._classified(exc) from None
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
            if self.trouble is not None:  # what is kept back waits for a disk that takes writes (or a replay)
                return

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
            waiting = self._keep_deferred(batch, outcomes, rows)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done() or id(future) in waiting:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if not self._awaited:  # only deferred writes are left: they wait for company (or their timer)
                break
        if (self._pending or self._rows) and self.trouble is None:  # else they wait for a write that works
            self._defer_commit()

    def _commit_batch(self, works: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        conn = self._require()
        try:
            results = transaction(conn, lambda c: [work(c) for work in works])
            self._committed()
            return [(True, result) for result in results]
        except Exception as exc:
            error = self._classified(exc)
            if len(works) == 1 or isinstance(error, StorageFull):  # a full disk fails them all alike
                return [(False, error)] * len(works)
        outcomes: list[tuple[bool, Any]] = []
        for work in works:  # isolate the failing write(s)
            try:
                outcomes.append((True, transaction(conn, work)))
                self._committed()
            except Exception as exc:
                outcomes.append((False, self._classified(exc)))
        return outcomes

    @property
    def trouble(self) -> str | None:
        """Why the disk should not be given new work now (full, failing, or below the free space asked for)."""
        return self._write_trouble or self._space_trouble

    def check_space(self) -> bool:
        """Compare the disk's free space with `min_free_bytes`; False (and `trouble` says so) when below it."""
        if not self.min_free_bytes:
            return True
        stats = os.statvfs(self.path.parent)
        free = stats.f_bavail * stats.f_frsize
        low = free < self.min_free_bytes
        if low and self._space_trouble is None:
            log.error("only %d MB free on the disk of %s (at least %d MB asked for by min_free_disk_mb): new work is "
                      "refused until there is room", free >> 20, self.path.parent, self.min_free_bytes >> 20)
        elif not low and self._space_trouble is not None:
            log.warning("%s has room again (%d MB free)", self.path.parent, free >> 20)
        self._space_trouble = f"{free >> 20} MB free, {self.min_free_bytes >> 20} MB needed" if low else None
        return not low

    def _committed(self) -> None:
        self.commits += 1
        if self._write_trouble is not None:
            log.warning("%s takes writes again", self.path)
            self._write_trouble = None

    def _classified(self, exc: Exception) -> Exception:
        """`exc`, or a StorageFull in its place when it says the disk is full or failing (noted in `trouble`)."""
        reason = storage_trouble(exc)
        if reason is None:
            return exc
        if self._write_trouble is None:
            log.error("%s cannot take writes: %s; new work is refused until it can", self.path, reason)
        self._write_trouble = reason
        error = StorageFull(f"the data disk cannot take writes: {reason}")
        error.__cause__ = exc
        return error

    def _keep_deferred(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]],
                       outcomes: list[tuple[bool, Any]], rows: dict[str, list[tuple[Any, ...]]]) -> set[int]:
        """Bookkeeping nobody waits on is not lost to a full disk: put it back to ride with a later commit (its
        future is answered then). Returns the ids of the futures kept waiting."""
        kept = []
        for n, ((work, future), (ok, value)) in enumerate(zip(batch, outcomes, strict=True)):
            if ok or not isinstance(value, StorageFull) or not isinstance(future, _Deferred):
                continue
            if rows and n == len(batch) - 1:  # the rows of `defer_row`, which nobody holds a future of
                for sql, values in rows.items():
                    self._rows[sql] = values + self._rows.get(sql, [])
                outcomes[n] = (True, None)
            else:
                kept.append((work, future))
        self._pending[:0] = kept
        return {id(future) for _, future in kept}

    async def probe(self) -> bool:
        """Check the free space and try one small durable write (with any writes kept back); True when the disk
        takes writes again."""
        def touch(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
            conn.execute("INSERT OR REPLACE INTO store_probe (id, at) VALUES (1, ?)", (time.time(),))

        if not self.check_space():
            return False
        try:
            await self.write(touch)
        except (StorageFull, DurabilityError):
            return False
        return self.trouble is None

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
            self._write_trouble = storage_trouble(exc) or f"commits cannot be made durable ({exc!r})"
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
            if self._pending or self._rows:
                log.warning("closing with %d deferred writes the full disk did not take (events they concern are "
                            "replayed at the next start)", len(self._pending) + sum(map(len, self._rows.values())))
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


class _Deferred(asyncio.Future[Any]):
    """The future of a write nobody waits on (`write_soon`, `defer_row`): on a full disk it is kept, not failed."""


def _logged_future() -> asyncio.Future[Any]:
    future = _Deferred(loop=asyncio.get_running_loop())
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a deferred database write failed", exc_info=future.exception())


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` inside BEGIN IMMEDIATE ... COMMIT, rolling back on any error (a failed COMMIT included: after a
    full disk SQLite may already have rolled back by itself, or not)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_FULL_SQLITE = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}


def storage_trouble(exc: BaseException) -> str | None:
    """What is wrong with the disk, if `exc` says it is full or failing; None for any other error."""
    if isinstance(exc, StorageFull):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return os.strerror(exc.errno or 0).lower()
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _FULL_SQLITE:
        return str(exc)
    return None
