"""Archiving the audit log (`herald audit archive`): its older entries move out of the database into a file, and the
chain goes on verifiable.

Every other table forgets its old rows (engine.server.retention); the audit log is the lasting record, so it is
never simply deleted. Archiving instead:

1. checks the whole chain first (`audit_verify.verify`): a broken log is not archived, since that would bury the
   evidence;
2. writes the entries older than the cut-off to a gzipped JSON Lines file (one entry per line, every column, so the
   file verifies on its own), 0600, fsynced, then renamed into place;
3. appends an `audit.archived` entry (first and last entry archived, the last one's hash, the file's name and
   SHA-256). The entry is keyed like every other, so nobody without the audit key can claim that deleted entries
   were archived;
4. deletes the archived rows, oldest first, `DELETE_CHUNK` per transaction: the engine's own commits wait for one
   short transaction at most, never for the whole archive.

A crash before 3 leaves a file and an unchanged log (the next run writes the file again); a crash during 4 leaves
the newest archived rows in the database, which verify accepts (with a warning) and the next run deletes first. The
CLI may archive while the engine runs: both read the chain's last link inside their own write transaction.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import private
from engine.core.errors import AuditError
from engine.core.store import transaction
from engine.security.audit import ARCHIVED, append_entries
from engine.security.audit_anchor import Anchor, Head
from engine.security.audit_verify import ArchivedPart, verify

COLUMNS = ("seq", "time", "action", "actor", "data", "prev_hash", "hash")
# Rows per delete transaction. The engine's commits wait for one: ~33 ms with its commit at 1,000 rows, in a log of a
# million with random alert fingerprints (each row touches its own page of the alert index); 5,000 took 37 s instead
# of 44 s for 900,000 rows, but held the engine up to 257 ms (benchmarks/audit_archive.py).
DELETE_CHUNK = 1_000
COMPRESS_LEVEL = 6  # gzip's usual default: level 9 took three times as long for 5% less
SUFFIX = ".jsonl.gz"
# One archive line per entry, made by SQLite (900,000 entries written in 6.2 s, gzip included, against 9.6 s with a
# dict per row through Python's json).
_AS_JSON = "json_object(" + ", ".join(f"'{column}', {column}" for column in COLUMNS) + ")"


@dataclass(frozen=True)
class Archived:
    path: Path
    first: int
    last: int
    sha256: str
    size: int
    head: Head  # the `audit.archived` entry, now the chain's head


def archive(conn: sqlite3.Connection, anchor: Anchor, *, before: str, folder: Path,
            progress: Callable[[str], None] = lambda _: None) -> Archived | None:
    """Move the entries older than `before` (an ISO time, as entries record it) to a file in `folder`; None when
    there is none. AuditError when the chain does not verify or the file cannot be written. `progress` hears what
    is being done, for a person waiting (a million entries take about 45 s)."""
    progress("checking the chain")
    checked = verify(conn, anchor)
    if not checked.ok:
        raise AuditError(f"the audit log does not verify, so it is not archived (that would bury the evidence): "
                         f"entry {checked.first_bad_seq}: {checked.reason}")
    _finish_interrupted(conn)  # after the check: the entry it trusts is keyed, so it was not forged to delete more
    # Entries are in time order except across a clock step back: cut before the first entry at or after `before`.
    bounds = conn.execute(
        "SELECT (SELECT min(seq) FROM audit_log), "
        "coalesce((SELECT min(seq) FROM audit_log WHERE time >= ?), (SELECT max(seq) FROM audit_log) + 1)",
        (before,)).fetchone()
    first, stop = bounds[0], bounds[1]
    if first is None or stop <= first:
        return None
    last = stop - 1
    path = folder / f"audit-{first:09d}-{last:09d}{SUFFIX}"
    progress(f"writing entries {first}-{last} to {path}")
    sha256, size = _write(conn, first, last, path)
    last_hash = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (last,)).fetchone()[0]

    def record(c: sqlite3.Connection) -> Head:
        still = c.execute("SELECT min(seq) FROM audit_log").fetchone()[0]
        if still != first:
            raise AuditError(f"the audit log changed while it was archived (it now starts at entry {still}); "
                             "run the archive again")
        _, head = append_entries(c, anchor, [(ARCHIVED, "cli", {
            "first": first, "last": last, "last_hash": last_hash, "entries": last - first + 1,
            "file": path.name, "sha256": sha256})])
        return head

    head = transaction(conn, record)
    anchor.record(head)
    progress(f"deleting entries {first}-{last} from the database, {DELETE_CHUNK} per transaction")
    _delete_through(conn, first, last)
    return Archived(path, first, last, sha256, size, head)


def _finish_interrupted(conn: sqlite3.Connection) -> None:
    """Delete what an interrupted archive recorded as archived but left in the database."""
    row = conn.execute("SELECT data FROM audit_log WHERE action = ? ORDER BY seq DESC LIMIT 1", (ARCHIVED,)).fetchone()
    if row is None:
        return
    last = json.loads(row[0]).get("last")
    first = conn.execute("SELECT min(seq) FROM audit_log").fetchone()[0]
    if isinstance(last, int) and first <= last:
        _delete_through(conn, first, last)


def _delete_through(conn: sqlite3.Connection, first: int, last: int) -> None:
    """Delete entries `first`..`last`, oldest first, so what is left is always the chain's newest part."""
    for low in range(first, last + 1, DELETE_CHUNK):
        high = min(last, low + DELETE_CHUNK - 1)
        transaction(conn, functools.partial(_delete_up_to, high=high))


def _delete_up_to(conn: sqlite3.Connection, high: int) -> None:
    conn.execute("DELETE FROM audit_log WHERE seq <= ?", (high,))


def _write(conn: sqlite3.Connection, first: int, last: int, path: Path) -> tuple[str, int]:
    """Write entries `first`..`last` to `path` (via a temporary file, fsynced, 0600); return its SHA-256 and size."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=private.FOLDER_MODE)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, private.FILE_MODE)
        os.fchmod(fd, private.FILE_MODE)
        with os.fdopen(fd, "wb") as raw:
            # mtime 0: the same entries always make the same bytes, so a file written again has the same SHA-256
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=COMPRESS_LEVEL) as out:
                rows = conn.execute(f"SELECT {_AS_JSON} FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq",
                                    (first, last))
                for (line,) in rows:
                    out.write(line.encode() + b"\n")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(folder)  # the rename too, before the rows it holds are deleted
        finally:
            os.close(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AuditError(f"could not write the archive {path}: {exc.strerror or exc}") from exc
    return _sha256(path), path.stat().st_size


def read_archive(path: Path) -> ArchivedPart:
    """An archive file, for `verify`. AuditError when it cannot be read."""
    try:
        sha256 = _sha256(path)
    except OSError as exc:
        raise AuditError(f"cannot read the archive {path}: {exc.strerror or exc}") from exc
    return ArchivedPart(path.name, sha256, lambda: _entries(path))


def _entries(path: Path) -> Iterator[Mapping[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    raise AuditError(f"{path}:{number}: not an audit entry (not JSON)") from None
                if not isinstance(entry, dict) or any(column not in entry for column in COLUMNS):
                    raise AuditError(f"{path}:{number}: not an audit entry (it needs {', '.join(COLUMNS)})")
                yield entry
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise AuditError(f"cannot read the archive {path}: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
