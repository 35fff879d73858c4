"""What keeps the audit chain honest from outside its database: the key that signs each entry, and the head file.

- `audit.key` (in the data folder, 0600): 32 random bytes, made the first time an entry is written. Each entry's
  hash is an HMAC-SHA256 under it, so someone who can change the database but does not hold the key cannot write an
  entry that verifies: deleting a row and recomputing the chain is detected.
- `audit.head` (0600): the newest entry's sequence number and hash, rewritten after each commit (never before: it may
  lag the database after a crash, never lead it). Deleting the newest entries, or all of them, leaves the database
  behind the head file, which `herald audit verify` reports. The engine also logs the head (`audit head ...`) at
  most once a minute, so a copy lives wherever the logs go; `herald audit verify --expect-head` checks against such
  a copy.

When the database no longer holds the head the file records (someone truncated or rewrote it), the file is left
as it is, so the evidence stays until a person looks (and moves the file aside once they have).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.core import private
from engine.core.errors import AuditError

KEY_FILE = "audit.key"
HEAD_FILE = "audit.head"
KEY_BYTES = 32
log = logging.getLogger("herald.audit")


@dataclass(frozen=True)
class Head:
    """An entry of the chain, as an outside copy of it names it: `SEQ:HASH`."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def read_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditError(f"{path} is not an audit key (64 hex digits)") from None
    if len(key) != KEY_BYTES:
        raise AuditError(f"{path} is not an audit key (64 hex digits)")
    return key


def read_head(path: Path) -> Head | None:
    """The head a head file records; None when there is no file. AuditError when it is unreadable."""
    try:
        raw = json.loads(path.read_text())
        return Head(int(raw["seq"]), str(raw["hash"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"{path} is not an audit head file") from None


class Anchor:
    """The key file and head file of one data folder, for one writer of the audit log (the engine's AuditLog, or
    one CLI command)."""

    def __init__(self, folder: Path) -> None:
        self.key_path = folder / KEY_FILE
        self.head_path = folder / HEAD_FILE
        self._key: bytes | None = None
        self._checked = False
        self._stale = False  # the database lost the head the file records: keep the file as evidence
        self._lock = threading.Lock()  # head writes come from the engine's writer thread and from the CLI

    def key(self) -> bytes:
        """The folder's audit key, made (0600) on first use."""
        if self._key is None:
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, private.FILE_MODE)
            except FileExistsError:
                private.close_files(self.key_path)
                self._key = read_key(self.key_path)
            else:
                key = secrets.token_bytes(KEY_BYTES)
                with os.fdopen(fd, "w") as handle:
                    handle.write(key.hex() + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                self._key = key
        return self._key

    def check(self, conn: sqlite3.Connection) -> None:
        """Once per process, before the first entry is written: does the database still hold the recorded head?"""
        if self._checked:
            return
        self._checked = True
        try:
            head = read_head(self.head_path)
        except AuditError as exc:
            self._stale = True
            log.error("%s; it is left as it is. Check with `herald audit verify`.", exc)
            return
        if head is None:
            return
        row = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (head.seq,)).fetchone()
        if row is None or row[0] != head.hash:
            self._stale = True
            log.error("the audit log no longer holds the head %s records (entry %d %s): entries were deleted or "
                      "rewritten. The head file is left as evidence; `herald audit verify` shows what is wrong.",
                      self.head_path, head.seq, "is gone" if row is None else "differs")

    def record(self, head: Head) -> None:
        """Write `head` to the head file (atomically, fsynced) unless the file already records a newer one, or the
        database lost the one it records. Call only once the entry's commit is durable."""
        if self._stale:
            return
        with self._lock:
            try:
                current = read_head(self.head_path)
            except AuditError:
                return
            if current is not None and current.seq >= head.seq:
                return
            tmp = self.head_path.with_name(f".{HEAD_FILE}.{os.getpid()}.{threading.get_ident()}")
            private.write_private(tmp, json.dumps({"seq": head.seq, "hash": head.hash}) + "\n")
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)


def anchor_for(conn: sqlite3.Connection) -> Anchor:
    """The anchor of the data folder holding the database `conn` is connected to."""
    path = next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")
    return Anchor(Path(path).parent)
