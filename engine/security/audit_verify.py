"""Checking the audit chain (`herald audit verify`): walk every entry, check its link and keyed hash, and compare
the end of the chain with the head file and any head kept elsewhere. How the chain is built is in
engine.security.audit; what stays undetectable, and why, in docs/security.md."""

from __future__ import annotations

import hmac
import sqlite3
from dataclasses import dataclass

from engine.core.errors import AuditError
from engine.security.audit import GENESIS, KEYED, _digest, _mac
from engine.security.audit_anchor import Anchor, Head, anchor_for, read_head, read_key


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head: Head | None  # the newest entry that verified
    first_bad_seq: int | None = None
    reason: str = ""
    keyed_from: int | None = None  # the first keyed entry, if any
    warnings: tuple[str, ...] = ()


def verify_chain(conn: sqlite3.Connection) -> Verification:
    """Walk the chain with the data folder's own key and head file (see `verify`)."""
    return verify(conn, anchor_for(conn))


def verify(conn: sqlite3.Connection, anchor: Anchor, *, key: bytes | None = None,
           expect: str | None = None) -> Verification:
    """Walk the whole chain and report the first thing wrong: a missing, unlinked or altered entry (keyed entries
    checked with `key`, by default the folder's audit key), an unkeyed entry after keyed ones, no keyed entry at all
    although a key exists, a head file the chain no longer reaches, or an expected head (`SEQ:HASH`) not on it.
    AuditError when the key or head file cannot be read, or `expect` is not a head."""
    if key is None and anchor.key_path.exists():
        key = read_key(anchor.key_path)
    recorded = read_head(anchor.head_path)
    wanted = _parse_head(expect) if expect is not None else None
    prev, next_seq, count = GENESIS, 1, 0
    keyed_from: int | None = None
    last: Head | None = None
    wanted_seen = False

    def broken(seq: int, reason: str) -> Verification:
        return Verification(False, count, last, seq, reason, keyed_from)

    for row in conn.execute("SELECT * FROM audit_log ORDER BY seq"):
        seq, stored = row["seq"], row["hash"]
        if seq != next_seq:
            return broken(next_seq, f"entry {next_seq} is missing (next is {seq})")
        if row["prev_hash"] != prev:
            return broken(seq, f"entry {seq} does not link to entry {seq - 1}")
        fields = (prev, seq, row["time"], row["action"], row["actor"], row["data"])
        if stored.startswith(KEYED):
            if key is None:
                return broken(seq, f"entries from {seq} on are keyed, but there is no key to check them: "
                                   f"{anchor.key_path} is missing (give a copy with --key-file)")
            keyed_from = keyed_from or seq
            if not hmac.compare_digest(stored, _mac(key, *fields)):
                return broken(seq, f"entry {seq} was altered (its HMAC does not match the audit key)")
        elif keyed_from is not None:
            return broken(seq, f"entry {seq} is not keyed, but entries from {keyed_from} on are: it was rewritten "
                               "without the key")
        elif stored != _digest(*fields):
            return broken(seq, f"entry {seq} was altered (its hash does not match)")
        if recorded is not None and recorded.seq == seq and recorded.hash != stored:
            return broken(seq, f"entry {seq} is not the one {anchor.head_path} records: the chain was rewritten")
        if wanted is not None and (wanted[0] is None or wanted[0] == seq) and \
                stored.removeprefix(KEYED).startswith(wanted[1]):
            wanted_seen = True
        prev, next_seq, count, last = stored, seq + 1, count + 1, Head(seq, stored)

    end = next_seq - 1
    if key is not None and keyed_from is None:
        return broken(next_seq, f"no entry is keyed, but an audit key exists: the log was emptied or its keyed "
                                f"entries were deleted ({count} entries left)")
    if recorded is not None and recorded.seq > end:
        return broken(end + 1, f"the log ends at entry {end}, but {anchor.head_path} records entry "
                               f"{recorded.seq}: the newest entries were deleted")
    if wanted is not None and not wanted_seen:
        return broken(end + 1, f"the expected head {expect} is not on the chain (it ends at entry {end}): entries "
                               "up to it were deleted or rewritten")
    warnings: tuple[str, ...] = ()
    if recorded is None and keyed_from is not None:
        warnings = (f"there is no head file ({anchor.head_path}), so deleting the newest entries cannot be ruled "
                    "out here: compare with a head kept elsewhere (--expect-head, or the engine's `audit head` log "
                    "lines)",)
    return Verification(True, count, last, keyed_from=keyed_from, warnings=warnings)


def _parse_head(text: str) -> tuple[int | None, str]:
    """`SEQ:HASH` as printed by verify and logged by the engine, or just the hash (at least 16 hex digits of it)."""
    seq_text, colon, rest = text.partition(":")
    seq, digest = (int(seq_text), rest) if colon and seq_text.isdigit() else (None, text)
    digest = digest.removeprefix(KEYED).lower()
    if len(digest) < 16 or any(c not in "0123456789abcdef" for c in digest):
        raise AuditError(f"{text!r} is not a head: give SEQ:HASH as `herald audit verify` prints it (or at least "
                         "16 hex digits of the hash)")
    return seq, digest
