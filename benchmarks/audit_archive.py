"""What `herald audit archive` costs as the audit log grows, and how long it makes the running engine wait.

An audit log of N entries like the engine's `notification.sent` (keyed, chained, written with Herald's own code) is
archived up to 90% of it. Reported: the whole archive's time and its parts (the chain check, writing the gzipped
file, the deletes), its longest write transaction, commit included (the longest a commit of the running engine
waits for it), the
file's bytes per entry against the database's, and `herald audit verify --archive`'s walk through file and database.
The reference in the same run is the same rows deleted in one statement, as a first version did: the engine's
commits would wait for all of it.
Usage: python benchmarks/audit_archive.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import report  # noqa: E402

from engine.core.store import connect, transaction  # noqa: E402
from engine.security import audit_archive  # noqa: E402
from engine.security.audit import SCHEMA, append_entries  # noqa: E402
from engine.security.audit_anchor import Anchor  # noqa: E402
from engine.security.audit_archive import read_archive  # noqa: E402
from engine.security.audit_verify import verify  # noqa: E402

FILL_BATCH = 10_000


def _fill(folder: Path, entries: int) -> None:
    conn = connect(folder / "herald.db")
    conn.executescript(SCHEMA)
    anchor = Anchor(folder)
    head = None
    for start in range(0, entries, FILL_BATCH):
        batch = [("notification.sent", "system", {
            "rule": "rules/all.rules:1", "event": f"01JE{index:022d}", "alert": os.urandom(8).hex(),
            "platform": "chat", "chat": "#ops", "key": f"notify/01JR{index:022d}/0/#ops", "recipients": 1})
            for index in range(start, min(entries, start + FILL_BATCH))]
        _, head = transaction(conn, lambda c, batch=batch: append_entries(c, anchor, batch))
    assert head is not None
    anchor.record(head)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _timed(calls: dict[str, list[float]], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            calls.setdefault(name, []).append(time.perf_counter() - start)
    return timed


def measure(entries: int, work: Path) -> list[object]:
    folder = work / f"log-{entries}"
    folder.mkdir(mode=0o700)
    _fill(folder, entries)
    reference = work / f"reference-{entries}"
    shutil.copytree(folder, reference)
    db_bytes = (folder / "herald.db").stat().st_size

    conn = connect(folder / "herald.db")
    anchor = Anchor(folder)
    cut_seq = entries * 9 // 10
    cut = conn.execute("SELECT time FROM audit_log WHERE seq = ?", (cut_seq + 1,)).fetchone()[0]
    calls: dict[str, list[float]] = {}
    originals = {name: getattr(audit_archive, name) for name in ("verify", "_write", "_delete_through", "transaction")}
    for name, function in originals.items():
        setattr(audit_archive, name, _timed(calls, name, function))
    try:
        start = time.perf_counter()
        done = audit_archive.archive(conn, anchor, before=cut, folder=folder / "archive")
        total = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(audit_archive, name, function)
    assert done is not None and done.last == cut_seq
    start = time.perf_counter()
    walked = verify(conn, anchor, archives=[read_archive(done.path)])
    verify_s = time.perf_counter() - start
    assert walked.ok and walked.entries == entries + 1, walked
    conn.close()

    ref = connect(reference / "herald.db")
    start = time.perf_counter()
    transaction(ref, lambda c: c.execute("DELETE FROM audit_log WHERE seq <= ?", (cut_seq,)))
    one_statement_s = time.perf_counter() - start
    ref.close()

    writes = sorted(calls["transaction"])  # the archive's entry, then each delete: commit included
    return [entries, cut_seq, round(total, 1), round(sum(calls["verify"]), 1), round(sum(calls["_write"]), 1),
            round(sum(calls["_delete_through"]), 1), round(statistics.median(writes) * 1000, 1),
            round(writes[-1] * 1000, 1),
            round(one_statement_s * 1000), round(db_bytes / entries), round(done.size / cut_seq), round(verify_s, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="audit log sizes, comma-separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="herald-audit-archive-"))
    work.chmod(0o700)
    try:
        rows = [measure(int(size), work) for size in args.sizes.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report("audit archive (90% of the log)",
           ["entries", "archived", "archive_s", "chain_check_s", "file_write_s", "deletes_s", "write_txn_median_ms",
            "write_txn_max_ms", "one_statement_delete_ms", "db_bytes_per_entry", "file_bytes_per_entry",
            "verify_with_archive_s"], rows,
           notes="write_txn_*: the archive's write transactions, commit included (the last entry, then each "
                 "delete); the longest is the longest a commit of the running engine waits for the archive; "
                 "one_statement_delete_ms: the same rows deleted in one transaction (the reference)")


if __name__ == "__main__":
    main()
