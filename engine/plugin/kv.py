"""Each integration's small durable key-value store, in the engine's database (one table, keyed by namespace)."""

from __future__ import annotations

from engine.core.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS plugin_kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""


class SqliteKeyValue:
    def __init__(self, db: Database, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def get(self, key: str) -> str | None:
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT value FROM plugin_kv WHERE namespace = ? AND key = ?", (self._namespace, key)).fetchone())
        return str(row["value"]) if row else None

    async def put(self, key: str, value: str) -> None:
        await self._db.write(lambda conn: conn.execute(
            "INSERT INTO plugin_kv (namespace, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value", (self._namespace, key, value)))
