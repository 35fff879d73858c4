"""The floor under webhook ingest in this stack: what each unavoidable step costs per alert, with nothing around it.

Each step is Herald's own code or schema, timed alone in a tight loop on one core (no HTTP, no event loop, no rule
runs), on bodies of 100 Alertmanager alerts like the ingest benchmark's:
  parse     json.loads of the body
  validate  the webhook's payload model (AmPayload.model_validate)
  events    the alert events made from it (to_events)
  journal   each event serialised and inserted with Herald's journal schema, 100 per transaction, and the WAL
            fsynced once per transaction (store.connect's settings: WAL, synchronous=NORMAL plus an explicit fsync)
  handled   the same events marked handled (one UPDATE each, 100 per transaction)
  run rows  what one matching `notify` rule writes besides: 2 trace rows and 1 effect claim per alert
Times are wall time on an otherwise idle loop, so journal and handled include the wait for one fsync per 100
alerts (about 2-3 us per alert here). The sum of parse..handled is what an alert costs before any HTTP or asyncio
work; 1e6 / that sum is the most alerts/s one core can ingest durably with this stack, which is what the batch-100
target (2x Alertmanager) needs to be compared with. Usage: python benchmarks/ingest_floor.py [--alerts 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import report  # noqa: E402
from webhook_ingest import am_alert, herald_payload  # noqa: E402

from engine.cli.main import GC_GEN0_THRESHOLD  # noqa: E402
from engine.core import journal
from engine.core.store import connect  # noqa: E402
from engine.runs import actions, runtime  # noqa: E402
from integrations.webhook.alertmanager import AmPayload, to_events  # noqa: E402

BATCH = 100
RUN_STATES = ("EXECUTE", "REPORT_RESULT")  # the checks a run passed through are not stored (engine.runs.runtime)


def _timed(fn: object, items: list[object]) -> tuple[float, list[object]]:
    start = time.perf_counter()
    out = [fn(item) for item in items]  # type: ignore[operator]
    return time.perf_counter() - start, out


def main(total: int) -> None:
    gc.freeze()  # as `herald run` does once it is up (engine/cli/main.py), with the same young-generation threshold
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    alerts = [am_alert(i, "floor") for i in range(total)]
    bodies = [json.dumps(herald_payload(alerts[i:i + BATCH], i)).encode() for i in range(0, total, BATCH)]
    parse_s, raws = _timed(json.loads, bodies)
    validate_s, payloads = _timed(AmPayload.model_validate, raws)
    events_s, batches = _timed(lambda p: to_events(p, source="alertmanager"), payloads)

    folder = tempfile.mkdtemp(prefix="herald-floor-")
    conn = connect(Path(folder) / "floor.db")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for schema in (journal.SCHEMA, runtime.SCHEMA, actions.EFFECTS_SCHEMA):
        conn.executescript(schema)
    wal = os.open(Path(folder) / "floor.db-wal", os.O_RDONLY)

    def commit(sql: str, rows: list[tuple[object, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        os.fsync(wal)

    start = time.perf_counter()
    for events in batches:
        commit("INSERT OR IGNORE INTO events (id, kind, source, time, body) VALUES (?, ?, ?, ?, ?)",
               [(e.id, e.kind, e.source, e.time.isoformat(), e.model_dump_json()) for e in events])
    journal_s = time.perf_counter() - start
    start = time.perf_counter()
    for events in batches:
        commit("UPDATE events SET status = 'handled', handled_time = ?, graph_version = ? WHERE id = ?",
               [("2026-12-04T00:00:00.000+00:00", 1, e.id) for e in events])
    handled_s = time.perf_counter() - start
    start = time.perf_counter()
    for events in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)",
                         [(f"run-{e.id}", state, "2026-12-04T00:00:00.000+00:00", e.id, "notify-ops", "")
                          for e in events for state in RUN_STATES])
        conn.executemany("INSERT OR IGNORE INTO effects (key, time) VALUES (?, datetime('now'))",
                         [(f"run-{e.id}/0",) for e in events])
        conn.execute("COMMIT")
        os.fsync(wal)
    run_rows_s = time.perf_counter() - start
    os.close(wal)
    conn.close()
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)

    steps = {"parse": parse_s, "validate": validate_s, "events": events_s, "journal": journal_s,
             "handled": handled_s, "run rows (1 notify rule)": run_rows_s}
    rows = [(name, round(seconds / total * 1e6, 2)) for name, seconds in steps.items()]
    accept_us = sum(seconds for name, seconds in steps.items() if not name.startswith("run")) / total * 1e6
    rows.append(("sum parse..handled", round(accept_us, 2)))
    report(f"ingest floor (us of CPU per alert, {BATCH} alerts per body, {total} alerts, one core)",
           ["step", "us_per_alert"], rows,
           max_durable_ingest_per_s_one_core=round(1e6 / accept_us),
           notes="each step alone in a tight loop; HTTP, asyncio and rule runs come on top")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000)
    main(parser.parse_args().alerts)
