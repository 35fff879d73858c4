"""Checking the audit chain (`herald audit verify`): walk every entry, check its link and keyed hash, and compare
the end of the chain with the head file and any head kept elsewhere. How the chain is built is in
engine.security.audit; what stays undetectable, and why, in docs/security.md."""

from __future__ import annotations

import hmac
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import AuditError
from engine.security.audit import ARCHIVED, GENESIS, KEYED, keyed_hash, unkeyed_hash
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
    first: int | None = None  # the first entry walked (after 1 when older ones are archived)


@dataclass(frozen=True)
class ArchivedPart:
    """One archive file (engine.security.audit_archive reads it): its name and SHA-256 as its `audit.archived`
    entry records them, and its entries, oldest first, read anew on each call."""

    name: str
    sha256: str
    entries: Callable[[], Iterator[Mapping[str, Any]]]


def verify_chain(conn: sqlite3.Connection) -> Verification:
    """Walk the chain with the data folder's own key and head file (see `verify`)."""
    return verify(conn, anchor_for(conn))


def verify(conn: sqlite3.Connection, anchor: Anchor, *, key: bytes | None = None, expect: str | None = None,
           archives: Sequence[ArchivedPart] = ()) -> Verification:
    """Walk the whole chain and report the first thing wrong: a missing, unlinked or altered entry (keyed entries
    checked with `key`, by default the folder's audit key), an unkeyed entry after keyed ones, no keyed entry at all
    although a key exists, a head file the chain no longer reaches, or an expected head (`SEQ:HASH`) not on it.

    The walk starts at the oldest entry it is given: the first of `archives` (archive files, oldest first, which
    continue into the database), else the database's first. When that is not entry 1, an `audit.archived` entry
    further on (keyed, so nobody without the key can write one) must say the entries before it were archived and
    end with the hash it links to; each archive file's SHA-256 must be the one its `audit.archived` entry records.
    AuditError when the key or head file cannot be read, or `expect` is not a head."""
    if key is None and anchor.key_path.exists():
        key = read_key(anchor.key_path)
    recorded = read_head(anchor.head_path)
    wanted = _parse_head(expect) if expect is not None else None
    prev, next_seq, count = GENESIS, 1, 0
    first: tuple[int, str] | None = None  # the first entry walked: its seq and the hash it links to
    keyed_from: int | None = None
    last: Head | None = None
    wanted_seen = False
    archived: dict[int, dict[str, Any]] = {}  # what each `audit.archived` entry says, by the last entry it archived
    parts_end: list[tuple[ArchivedPart, Head]] = []  # each archive file and its last entry

    def broken(seq: int, reason: str) -> Verification:
        return Verification(False, count, last, seq, reason, keyed_from, first=first[0] if first else None)

    sources: list[tuple[ArchivedPart | None, Iterable[Mapping[str, Any]]]] = [
        (part, part.entries()) for part in archives]
    sources.append((None, conn.execute("SELECT * FROM audit_log ORDER BY seq")))
    for part, rows in sources:
        walked = count
        for row in rows:
            seq, stored = row["seq"], row["hash"]
            if part is None and archives and seq < next_seq:
                continue  # archived by an archive interrupted while deleting: its file, walked already, is the record
            if first is None:
                first = (seq, row["prev_hash"])
                if seq != 1:  # older entries archived (or deleted): checked once the walk has seen what follows
                    prev, next_seq = row["prev_hash"], seq
            if seq != next_seq:
                where = "; give every archive file, oldest first" if archives else ""
                return broken(next_seq, f"entry {next_seq} is missing (next is {seq}){where}")
            if row["prev_hash"] != prev:
                return broken(seq, f"entry {seq} does not link to entry {seq - 1}")
            fields = (prev, seq, row["time"], row["action"], row["actor"], row["data"])
            if stored.startswith(KEYED):
                if key is None:
                    return broken(seq, f"entries from {seq} on are keyed, but there is no key to check them: "
                                       f"{anchor.key_path} is missing (give a copy with --key-file)")
                keyed_from = keyed_from or seq
                if not hmac.compare_digest(stored, keyed_hash(key, *fields)):
                    return broken(seq, f"entry {seq} was altered (its HMAC does not match the audit key)")
            elif keyed_from is not None:
                return broken(seq, f"entry {seq} is not keyed, but entries from {keyed_from} on are: it was "
                                   "rewritten without the key")
            elif stored != unkeyed_hash(*fields):
                return broken(seq, f"entry {seq} was altered (its hash does not match)")
            if part is None and recorded is not None and recorded.seq == seq and recorded.hash != stored:
                return broken(seq, f"entry {seq} is not the one {anchor.head_path} records: the chain was rewritten")
            if wanted is not None and (wanted[0] is None or wanted[0] == seq) and \
                    stored.removeprefix(KEYED).startswith(wanted[1]):
                wanted_seen = True
            if row["action"] == ARCHIVED:
                said = json.loads(row["data"])
                archived[said.get("last")] = said
            prev, next_seq, count, last = stored, seq + 1, count + 1, Head(seq, stored)
        if part is not None:
            if count == walked or last is None:
                return broken(next_seq, f"{part.name} holds no audit entries")
            parts_end.append((part, last))

    end = next_seq - 1
    warnings: list[str] = []
    if first is not None and first[0] != 1:
        said = archived.get(first[0] - 1)
        # An archive interrupted while deleting left its newest archived rows: they are in its file as well.
        unfinished = [s for s in archived.values() if s.get("first", first[0]) < first[0] <= s.get("last", 0)]
        if unfinished:
            warnings.append(f"entries {first[0]}-{unfinished[0]['last']} are archived but still in the database (an "
                            "archive was interrupted): `herald audit archive` deletes them first")
        elif said is None or said.get("last_hash") != first[1]:
            return broken(first[0], f"entries 1-{first[0] - 1} are gone, and no audit.archived entry says they "
                                    "were archived: they were deleted")
    for part, part_last in parts_end:
        said = archived.get(part_last.seq)
        if said is None:
            return broken(part_last.seq, f"no audit.archived entry records {part.name}")
        if said.get("sha256") != part.sha256:
            return broken(part_last.seq, f"{part.name} is not the file its audit.archived entry records (its SHA-256 "
                                         "differs)")
    if key is not None and keyed_from is None:
        return broken(next_seq, f"no entry is keyed, but an audit key exists: the log was emptied or its keyed "
                                f"entries were deleted ({count} entries left)")
    if recorded is not None and recorded.seq > end:
        return broken(end + 1, f"the log ends at entry {end}, but {anchor.head_path} records entry "
                               f"{recorded.seq}: the newest entries were deleted")
    if wanted is not None and not wanted_seen:
        if first is not None and wanted[0] is not None and wanted[0] < first[0]:
            return broken(end + 1, f"the expected head {expect} is entry {wanted[0]}, which is archived (this walk "
                                   f"starts at entry {first[0]}): give the archive files with --archive")
        return broken(end + 1, f"the expected head {expect} is not on the chain (it ends at entry {end}): entries "
                               "up to it were deleted or rewritten")
    if recorded is None and keyed_from is not None:
        warnings.append(f"there is no head file ({anchor.head_path}), so deleting the newest entries cannot be "
                        "ruled out here: compare with a head kept elsewhere (--expect-head, or the engine's `audit "
                        "head` log lines)")
    return Verification(True, count, last, keyed_from=keyed_from, warnings=tuple(warnings),
                        first=first[0] if first else None)


def _parse_head(text: str) -> tuple[int | None, str]:
    """`SEQ:HASH` as printed by verify and logged by the engine, or just the hash (at least 16 hex digits of it)."""
    seq_text, colon, rest = text.partition(":")
    seq, digest = (int(seq_text), rest) if colon and seq_text.isdigit() else (None, text)
    digest = digest.removeprefix(KEYED).lower()
    if len(digest) < 16 or any(c not in "0123456789abcdef" for c in digest):
        raise AuditError(f"{text!r} is not a head: give SEQ:HASH as `herald audit verify` prints it (or at least "
                         "16 hex digits of the hash)")
    return seq, digest
