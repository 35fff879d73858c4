"""The one door to SQLite: a single connection owned by a single thread.

sqlite3 is blocking, so every query runs through `Database.call` on a dedicated worker thread; the event loop never
touches the connection. One writer also means transactions never contend with each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DB_NAME = "herald.db"


def connect(path: Path) -> sqlite3.Connection:
    """Open the data folder's database with the settings every user of it relies on."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an accepted event must survive a power cut
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Database:
    """An SQLite file in the data folder, reached only through `call` from async code."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DB_NAME
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-db")
        self._conn: sqlite3.Connection | None = None

    async def open(self, schemas: Iterable[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def _open() -> None:
            self._conn = connect(self.path)
            for schema in schemas:
                self._conn.executescript(schema)

        await self.call_raw(_open)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` on the database thread and return its result."""
        return await self.call_raw(lambda: fn(self._require(), *args, **kwargs))

    async def call_raw(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self.call_raw(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


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
