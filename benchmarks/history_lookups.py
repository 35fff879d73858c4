"""What Herald's reads into its growing tables cost as the data folder grows: lookups that run on the event loop.

A data folder is filled with N alerts as a running engine leaves them (each a journal row, two run-trace rows; one
task per 100), using Herald's own schemas; then, for an alert that last fired before all N:
  latest state   engine.runs.stateful.latest_status (each escalation step, silences mirrored to Alertmanager)
  event trace    engine.runs.trace.event_trace (the TUI's trace view, GET /api/v1/events/ID/trace)
Each is the median of 20 calls, in microseconds. A lookup by index costs the same at every size; the reference in
the same run is the same lookup as Herald made it before session 11 (a walk over the journal's JSON, a scan of the
trace), which grows with the folder and stalls the engine for as long.
Usage: python benchmarks/history_lookups.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import report  # noqa: E402

from dsl import EventGraph  # noqa: E402
from engine.core.events import AlertData, Event  # noqa: E402
from engine.core.ids import derived_id  # noqa: E402
from engine.core.store import connect  # noqa: E402
from engine.runs.stateful import latest_status  # noqa: E402
from engine.runs.trace import event_trace  # noqa: E402
from engine.server.app import SCHEMAS  # noqa: E402

RULE = "rules/all.rules:1"
CALLS = 20
CHUNK = 10_000
OLD_LATEST = ("SELECT json_extract(body, '$.data.status') FROM events WHERE kind = 'alert' "
              "AND json_extract(body, '$.data.fingerprint') = ? ORDER BY id DESC LIMIT 1")
OLD_TRACE = "SELECT * FROM run_trace NOT INDEXED WHERE event_id = ? ORDER BY rowid"


def _fill(conn: Any, start: datetime, first: int, count: int) -> None:
    events, traces, tasks = [], [], []
    for n in range(first, first + count):
        event = Event(source="alertmanager", time=start + timedelta(milliseconds=n),
                      data=AlertData(fingerprint=f"fp-{n % 5000:05d}" if n else "fp-old", status="firing",
                                     name="DiskFull", severity="critical", labels={"instance": f"host{n % 5000}"}))
        events.append((event.id, "alert", event.source, event.time.isoformat(), event.model_dump_json(),
                       event.data.fingerprint))  # type: ignore[union-attr]
        run_id = derived_id(event.time, event.id, RULE)
        traces += [(run_id, state, event.time.isoformat(), event.id, RULE, "") for state in ("EXECUTE",
                                                                                            "REPORT_RESULT")]
        if n % 100 == 0:
            task_id = derived_id(event.time, "task", run_id, "0")
            tasks.append((task_id, event.time.isoformat(), json.dumps({"task_id": task_id, "run_id": run_id})))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (id, kind, source, time, body, status, alert) "
                     "VALUES (?, ?, ?, ?, ?, 'handled', ?)", events)
    conn.executemany("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)", traces)
    conn.executemany("INSERT INTO tasks (task_id, status, create_time, body) VALUES (?, 'succeeded', ?, ?)", tasks)
    conn.execute("COMMIT")


def _median_us(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(sizes: list[int]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="herald-lookups-"))
    try:
        rows = _measure(connect(folder / "herald.db"), sizes)
    finally:
        shutil.rmtree(folder)  # about a gigabyte at a million alerts
    report("history lookups (us, median of 20, on the event loop)",
           ["alerts", "latest state", "latest state, JSON walk (before)", "event trace", "trace scan (before)"],
           rows)


def _measure(conn: Any, sizes: list[int]) -> list[tuple[object, ...]]:
    for schema in SCHEMAS:
        schema(conn) if callable(schema) else conn.executescript(schema)
    start, filled = datetime.now(UTC) - timedelta(days=30), 0
    rows: list[tuple[object, ...]] = []
    graph = EventGraph([])
    for size in sorted(sizes):
        while filled < size:
            count = min(CHUNK, size - filled)
            _fill(conn, start, filled, count)
            filled += count
        old_id = conn.execute("SELECT id FROM events WHERE alert = 'fp-old'").fetchone()[0]
        rows.append((size,
                     _median_us(lambda: latest_status(conn, "fp-old")),
                     _median_us(lambda: conn.execute(OLD_LATEST, ("fp-old",)).fetchone()),
                     _median_us(lambda old_id=old_id: event_trace(conn, old_id, graph)),
                     _median_us(lambda old_id=old_id: conn.execute(OLD_TRACE, (old_id,)).fetchall())))
        print(f"  {size:,} alerts done", file=sys.stderr)
    conn.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="data folder sizes in alerts, comma-separated (default 10000,100000,1000000)")
    main([int(size) for size in parser.parse_args().sizes.split(",")])
