"""Each integration's small durable key-value store, in the engine's database (one table, keyed by namespace).

An entry may expire (`put(..., ttl_s=...)`): it is not read after its time, and expired entries are deleted as
later ones are written, so a store of short-lived entries (seen webhook signatures, say) stays as small as its window.
"""

from __future__ import annotations

import sqlite3
import time

from engine.core.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS plugin_kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires REAL,  -- seconds since the epoch; NULL: kept until replaced
    PRIMARY KEY (namespace, key)
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Give a store made before entries could expire its `expires` column, and index what expires."""
    if "expires" not in {row[1] for row in conn.execute("PRAGMA table_info(plugin_kv)")}:
        conn.execute("ALTER TABLE plugin_kv ADD COLUMN expires REAL")
    conn.execute("CREATE INDEX IF NOT EXISTS plugin_kv_expires ON plugin_kv(expires) WHERE expires IS NOT NULL")


class SqliteKeyValue:
    def __init__(self, db: Database, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def get(self, key: str) -> str | None:
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT value FROM plugin_kv WHERE namespace = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (self._namespace, key, time.time())).fetchone())
        return str(row["value"]) if row else None

    async def put(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        now = time.time()
        expires = None if ttl_s is None else now + ttl_s

        def _put(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM plugin_kv WHERE expires IS NOT NULL AND expires <= ?", (now,))
            conn.execute("INSERT INTO plugin_kv (namespace, key, value, expires) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
                         (self._namespace, key, value, expires))

        await self._db.write(_put)
