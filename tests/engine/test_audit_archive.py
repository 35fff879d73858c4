"""Archiving the audit log on a real SQLite file with the engine's schema and real gzip files: archived entries
leave the database, the chain still verifies from the database alone and from the archives through the database,
and what archiving must not hide is still detected: entries deleted without an archive entry, an archive entry
forged without the key, an altered or replaced archive file, a gap between archives. A broken log is not archived;
an archive interrupted while deleting still verifies, and the next one finishes it."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import sqlite3
import stat
from pathlib import Path

import pytest

from engine.core.errors import AuditError
from engine.core.store import connect
from engine.security import audit_archive
from engine.security.audit import SCHEMA, append_row
from engine.security.audit_anchor import Anchor
from engine.security.audit_archive import archive, read_archive
from engine.security.audit_verify import verify


@pytest.fixture
def conn(tmp_path: Path):  # type: ignore[no-untyped-def]
    tmp_path.chmod(0o700)
    connection = connect(tmp_path / "herald.db")
    connection.executescript(SCHEMA)
    yield connection
    connection.close()


def _anchor(conn: sqlite3.Connection) -> Anchor:
    return Anchor(Path(conn.execute("PRAGMA database_list").fetchone()["file"]).parent)


def _append(conn: sqlite3.Connection, count: int) -> None:
    for number in range(count):
        append_row(conn, "command.received", "alice", {"text": f"/ping {number}"})


def _time_of(conn: sqlite3.Connection, seq: int) -> str:
    return str(conn.execute("SELECT time FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0])


def _seqs(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT seq FROM audit_log ORDER BY seq")]


def test_archived_entries_leave_the_log_and_the_chain_still_verifies(conn: sqlite3.Connection,
                                                                     tmp_path: Path) -> None:
    _append(conn, 10)
    done = archive(conn, _anchor(conn), before=_time_of(conn, 6), folder=tmp_path / "archive")
    assert done is not None and (done.first, done.last) == (1, 5)
    assert _seqs(conn) == list(range(6, 12))  # 6-10, and the audit.archived entry
    said = json.loads(conn.execute("SELECT data FROM audit_log WHERE action = 'audit.archived'").fetchone()[0])
    assert said["first"] == 1 and said["last"] == 5 and said["file"] == done.path.name
    assert said["sha256"] == hashlib.sha256(done.path.read_bytes()).hexdigest()
    assert stat.S_IMODE(done.path.stat().st_mode) == 0o600
    with gzip.open(done.path, "rt") as lines:
        assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]

    alone = verify(conn, _anchor(conn))
    assert alone.ok, alone.reason
    assert (alone.first, alone.entries, alone.head) == (6, 6, done.head)
    whole = verify(conn, _anchor(conn), archives=[read_archive(done.path)])
    assert whole.ok, whole.reason
    assert (whole.first, whole.entries) == (1, 11)


def test_archives_continue_each_other_and_must_be_given_without_gaps(conn: sqlite3.Connection,
                                                                     tmp_path: Path) -> None:
    _append(conn, 6)
    older = archive(conn, _anchor(conn), before=_time_of(conn, 4), folder=tmp_path)
    _append(conn, 3)
    newer = archive(conn, _anchor(conn), before=_time_of(conn, 9), folder=tmp_path)
    assert older is not None and newer is not None
    assert (older.first, older.last, newer.first, newer.last) == (1, 3, 4, 8)
    both = verify(conn, _anchor(conn), archives=[read_archive(older.path), read_archive(newer.path)])
    assert both.ok and (both.first, both.entries) == (1, 11), both.reason  # 9 appended, 2 audit.archived
    assert verify(conn, _anchor(conn), archives=[read_archive(newer.path)]).ok

    gap = verify(conn, _anchor(conn), archives=[read_archive(older.path)])
    assert not gap.ok
    assert gap.reason == "entry 4 is missing (next is 9); give every archive file, oldest first"


def test_nothing_older_than_the_cut_off_archives_nothing(conn: sqlite3.Connection, tmp_path: Path) -> None:
    _append(conn, 3)
    assert archive(conn, _anchor(conn), before="2000-01-01T00:00:00+00:00", folder=tmp_path / "a") is None
    assert _seqs(conn) == [1, 2, 3]
    assert not (tmp_path / "a").exists()


def test_entries_deleted_without_an_archive_entry_are_detected(conn: sqlite3.Connection, tmp_path: Path) -> None:
    _append(conn, 5)
    conn.execute("DELETE FROM audit_log WHERE seq <= 2")
    never = verify(conn, _anchor(conn))
    assert not never.ok
    assert never.reason == ("entries 1-2 are gone, and no audit.archived entry says they were archived: they were "
                            "deleted")

    conn.execute("DELETE FROM audit_log")  # start again (the head file would report the deleted head)
    (tmp_path / "audit.head").unlink()
    _append(conn, 5)
    done = archive(conn, _anchor(conn), before=_time_of(conn, 3), folder=tmp_path)
    assert done is not None and done.last == 2
    conn.execute("DELETE FROM audit_log WHERE seq = 3")  # the oldest entry the archive left
    more = verify(conn, _anchor(conn))
    assert not more.ok and more.reason.startswith("entries 1-3 are gone"), more.reason


def test_an_archive_entry_forged_without_the_key_is_detected(conn: sqlite3.Connection, tmp_path: Path) -> None:
    _append(conn, 5)
    last = conn.execute("SELECT seq, hash, prev_hash FROM audit_log WHERE seq = 2").fetchone()
    conn.execute("DELETE FROM audit_log WHERE seq <= 2")
    top = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    # It also claims entries 3-5 are archived: the next archive would delete them if it trusted the claim.
    data = json.dumps({"first": 1, "last": 5, "last_hash": last["hash"], "entries": 5, "file": "x", "sha256": "0"})
    canonical = json.dumps([top["hash"], top["seq"] + 1, "2026-12-07T00:00:00+00:00", "audit.archived", "cli",
                            data], separators=(",", ":")).encode()
    forged = "hmac-sha256:" + hmac.new(b"guess" * 8, canonical, hashlib.sha256).hexdigest()
    conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (top["seq"] + 1, "2026-12-07T00:00:00+00:00", "audit.archived", "cli", data, top["hash"], forged))
    result = verify(conn, _anchor(conn))
    assert not result.ok
    assert result.reason == f"entry {top['seq'] + 1} was altered (its HMAC does not match the audit key)"
    with pytest.raises(AuditError, match="does not verify"):
        archive(conn, _anchor(conn), before="2000-01-01T00:00:00+00:00", folder=tmp_path)
    assert _seqs(conn) == [3, 4, 5, 6]


def _rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    with gzip.open(path, "rt") as lines:
        entries = [json.loads(line) for line in lines]
    change(entries)
    with gzip.open(path, "wt", compresslevel=1) as out:
        out.writelines(json.dumps(entry) + "\n" for entry in entries)


def test_an_altered_or_replaced_archive_file_is_detected(conn: sqlite3.Connection, tmp_path: Path) -> None:
    _append(conn, 6)
    done = archive(conn, _anchor(conn), before=_time_of(conn, 4), folder=tmp_path)
    assert done is not None

    _rewrite(done.path, lambda entries: None)  # the same entries, other bytes: not the file the log records
    replaced = verify(conn, _anchor(conn), archives=[read_archive(done.path)])
    assert not replaced.ok
    assert replaced.reason == f"{done.path.name} is not the file its audit.archived entry records (its SHA-256 differs)"

    _rewrite(done.path, lambda entries: entries[1].update(actor="mallory"))
    altered = verify(conn, _anchor(conn), archives=[read_archive(done.path)])
    assert not altered.ok and altered.reason == "entry 2 was altered (its HMAC does not match the audit key)"

    done.path.write_bytes(gzip.compress(b""))
    empty = verify(conn, _anchor(conn), archives=[read_archive(done.path)])
    assert not empty.ok and empty.reason == f"{done.path.name} holds no audit entries"

    done.path.write_bytes(b"not gzip")
    with pytest.raises(AuditError, match="cannot read the archive"):
        verify(conn, _anchor(conn), archives=[read_archive(done.path)])


def test_a_log_that_does_not_verify_is_not_archived(conn: sqlite3.Connection, tmp_path: Path) -> None:
    _append(conn, 5)
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    with pytest.raises(AuditError, match="does not verify, so it is not archived .*entry 2: entry 2 was altered"):
        archive(conn, _anchor(conn), before=_time_of(conn, 4), folder=tmp_path / "a")
    assert _seqs(conn) == [1, 2, 3, 4, 5]
    assert not (tmp_path / "a").exists()


def test_an_archive_interrupted_while_deleting_verifies_and_is_finished_next_time(
        conn: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _append(conn, 8)
    monkeypatch.setattr(audit_archive, "DELETE_CHUNK", 2)
    deletes = 0
    real_delete = audit_archive._delete_up_to

    def crash_on_the_second(c: sqlite3.Connection, high: int) -> None:
        nonlocal deletes
        deletes += 1
        if deletes == 2:
            raise KeyboardInterrupt  # the process stops here
        real_delete(c, high)

    monkeypatch.setattr(audit_archive, "_delete_up_to", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        archive(conn, _anchor(conn), before=_time_of(conn, 6), folder=tmp_path)
    assert _seqs(conn) == [3, 4, 5, 6, 7, 8, 9]  # 1-2 deleted, 3-5 archived but still here, 9: audit.archived
    halfway = verify(conn, _anchor(conn))
    assert halfway.ok, halfway.reason
    assert halfway.warnings == ("entries 3-5 are archived but still in the database (an archive was interrupted): "
                                "`herald audit archive` deletes them first",)
    with_file = verify(conn, _anchor(conn), archives=[read_archive(tmp_path / "audit-000000001-000000005.jsonl.gz")])
    assert with_file.ok and with_file.entries == 9, with_file.reason

    monkeypatch.setattr(audit_archive, "_delete_up_to", real_delete)
    assert archive(conn, _anchor(conn), before="2000-01-01T00:00:00+00:00", folder=tmp_path) is None
    assert _seqs(conn) == [6, 7, 8, 9]
    done = verify(conn, _anchor(conn), archives=[read_archive(tmp_path / "audit-000000001-000000005.jsonl.gz")])
    assert done.ok and not done.warnings and done.entries == 9, done
