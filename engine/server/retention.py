"""How long the engine's history is kept: handled events, their runs' trace rows, their claimed effects and their
finished tasks are forgotten after `keep_history_days` (config), so the data folder stops growing with every alert.

Every id in these tables starts with the time of the event it comes from (engine.core.ids: events, run ids, effect
keys and task ids are all made or derived from it), so one id prefix is the cut-off for all four, and each delete is
a range of a primary key or an index, never a scan. The deletes go in chunks of their own small commits, each
a few milliseconds on the event loop, however much a first pass after an upgrade finds.

Never forgotten: an event still needed and everything from its time on: one not yet handled (a replay after a crash
still finds the effects its runs claimed), or one a group or a confirmation will run on from later; a task that is
not finished or whose result is not reported yet; and the audit log, which is the lasting record
(engine.security.audit). Sent outbox rows have a keep of their own (engine.delivery.outbox).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from engine.core.ids import time_prefix
from engine.core.store import Database
from engine.tasks.record import FINAL

CHUNK = 2_000  # rows per commit: a few ms on the loop
log = logging.getLogger("herald.retention")

# The time of the oldest event still needed: one not yet handled (a restart replays it), and the first event of a
# group waiting for its window or of a command waiting for its second confirmation (both run on from it later).
NEEDED = ("SELECT min(time) FROM events WHERE id = (SELECT min(id) FROM events WHERE status = 'accepted') OR id IN "
          "(SELECT event_id FROM group_state UNION SELECT event_id FROM confirmations WHERE status = 'pending')")

# Each statement deletes at most `?` (CHUNK) rows whose id sorts before `?` (the cut-off prefix).
FORGET = {
    "events": "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ? AND status = 'handled' LIMIT ?)",
    "run_trace": "DELETE FROM run_trace WHERE rowid IN (SELECT rowid FROM run_trace WHERE event_id < ? LIMIT ?)",
    "effects": "DELETE FROM effects WHERE key IN (SELECT key FROM effects WHERE key < ? LIMIT ?)",
    "tasks": "DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE task_id < ? "
             f"AND status IN ({', '.join(repr(status) for status in sorted(FINAL))}) AND unreported = 0 LIMIT ?)",
}


async def forget_history(db: Database, keep_days: int, *, chunk: int = CHUNK) -> dict[str, int]:
    """Delete what is older than `keep_days` (see the module docstring); how many rows of each table went."""
    cutoff = time_prefix(datetime.now(UTC) - timedelta(days=keep_days))
    oldest = await db.call(lambda conn: conn.execute(NEEDED).fetchone()[0])
    if oldest is not None:  # its runs' ids come from its time, which may be a millisecond before its own id's
        cutoff = min(cutoff, time_prefix(datetime.fromisoformat(oldest) - timedelta(seconds=1)))
    gone = dict.fromkeys(FORGET, 0)
    for table, sql in FORGET.items():
        while True:
            # one statement, its own transaction: a pass that finds nothing commits nothing
            count = await db.call(lambda conn, sql=sql: conn.execute(sql, (cutoff, chunk)).rowcount)
            gone[table] += count
            if count < chunk:
                break
    if any(gone.values()):
        log.info("forgot history older than %d days: %s", keep_days,
                 ", ".join(f"{count} {table} rows" for table, count in gone.items() if count))
    return gone
