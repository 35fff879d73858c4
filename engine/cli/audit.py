"""`herald audit`: show and verify the audit log (engine.security.audit)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.cli.common import EXIT_FAILED, EXIT_OK, add_config_args, load_for


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="inspect the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the hash chain; exit 1 naming the first bad entry",
        description="Check every entry's link and keyed hash, that the log still reaches the head recorded in "
                    "<data>/audit.head, and optionally a head kept elsewhere (the engine logs `audit head SEQ:HASH`).")
    add_config_args(verify)
    verify.add_argument("--expect-head", metavar="SEQ:HASH",
                        help="a head copied earlier (from this command's output or the engine's log): it must be on "
                             "the chain, so entries up to it were neither deleted nor rewritten")
    verify.add_argument("--key-file", type=Path, metavar="FILE",
                        help="check with this copy of the audit key instead of <data>/audit.key (a copy kept "
                             "elsewhere also catches a chain recomputed with a replaced key)")
    verify.add_argument("--archive", type=Path, nargs="+", default=[], metavar="FILE",
                        help="archive files written by `herald audit archive`, oldest first: the walk starts at the "
                             "first one's first entry and goes on through the database")
    archive = audit_sub.add_parser(
        "archive", help="move entries older than a time to a gzipped file; the chain keeps verifying",
        description="Check the whole chain, write every entry older than --before to a gzipped JSON Lines file "
                    "(0600), then delete them from the database and append an `audit.archived` entry naming the "
                    "file and its SHA-256. Safe while the engine runs. Check an archive later with "
                    "`herald audit verify --archive FILE...`. Entries are never deleted otherwise: without "
                    "archiving the log grows by about 400 bytes per notification.")
    add_config_args(archive)
    archive.add_argument("--before", type=_since, required=True, metavar="WHEN",
                         help="archive the entries older than this: an ISO time (2026-11-01), an age (90d) or now")
    archive.add_argument("--to", type=Path, metavar="DIR",
                         help="where to write the file (default: <data>/audit-archive); move it off this machine "
                              "afterwards, with the audit key kept apart from it")
    show = audit_sub.add_parser("show", help="print the audit log")
    add_config_args(show)
    show.add_argument("--limit", "--last", dest="limit", type=int, default=50, metavar="N",
                      help="show the newest N entries (default: 50; 0: all)")
    show.add_argument("--since", type=_since, metavar="WHEN",
                      help="only entries from this time on: an ISO time (2026-11-27T10:00) or an age (30m, 2h, 7d)")
    audit.set_defaults(handler=_audit)


def _since(text: str) -> str:
    """An ISO time, an age like 30m / 2h / 7d, or `now`, as the UTC ISO string audit times compare against."""
    from engine.cli.security import parse_duration

    try:
        when = datetime.now(UTC) if text == "now" else datetime.fromisoformat(text)
    except ValueError:
        when = datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _audit(args: argparse.Namespace) -> int:
    from engine.core.store import DB_NAME, connect

    config = load_for(args)
    path = config.data_dir / DB_NAME
    if not path.exists():
        print(f"no Herald database at {path}", file=sys.stderr)
        return EXIT_FAILED
    conn = connect(path)
    try:
        if args.audit_command == "verify":
            return _audit_verify(args, conn)
        if args.audit_command == "archive":
            return _audit_archive(args, conn, config.data_dir / "audit-archive")
        since = args.since or "0000"
        total = conn.execute("SELECT count(*) FROM audit_log WHERE time >= ?", (since,)).fetchone()[0]
        rows = conn.execute("SELECT * FROM audit_log WHERE time >= ? ORDER BY seq DESC LIMIT ?",
                            (since, args.limit if args.limit > 0 else -1)).fetchall()
        for row in reversed(rows):
            print(f"{row['seq']:>6} {row['time']} {row['action']:<18} {row['actor']:<14} {row['data']}")
        which = f" since {args.since}" if args.since else ""
        more = "; --limit N shows more, --limit 0 all" if len(rows) < total else ""
        print(f"{len(rows)} of {total} entries{which} shown (the newest){more}", file=sys.stderr)
        return EXIT_OK
    finally:
        conn.close()


def _audit_verify(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    from engine.security.audit_anchor import anchor_for, read_key
    from engine.security.audit_archive import read_archive
    from engine.security.audit_verify import verify

    key = read_key(args.key_file) if args.key_file is not None else None
    archives = [read_archive(path) for path in args.archive]
    result = verify(conn, anchor_for(conn), key=key, expect=args.expect_head, archives=archives)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.ok:
        keyed = f", keyed from entry {result.keyed_from}" if result.keyed_from else ", none keyed"
        older = (f" (from entry {result.first}; entries before it are archived)"
                 if result.first is not None and result.first > 1 else "")
        files = f", {len(archives)} archive file(s) included" if archives else ""
        print(f"audit log intact: {_entries(result.entries)}{older}{files}{keyed}; head {result.head or 'none'}")
        return EXIT_OK
    print(f"audit log BROKEN at entry {result.first_bad_seq}: {result.reason} "
          f"({_entries(result.entries)} verified before it)", file=sys.stderr)
    return EXIT_FAILED


def _audit_archive(args: argparse.Namespace, conn: sqlite3.Connection, default_folder: Path) -> int:
    from engine.security.audit_anchor import anchor_for
    from engine.security.audit_archive import archive

    done = archive(conn, anchor_for(conn), before=args.before, folder=args.to or default_folder,
                   progress=lambda step: print(f"{step}...", file=sys.stderr, flush=True))
    if done is None:
        print(f"nothing to archive: no entry is older than {args.before}")
        return EXIT_OK
    print(f"archived entries {done.first}-{done.last} ({done.last - done.first + 1}) to {done.path} "
          f"({_size(done.size)}, sha256 {done.sha256}); the log now starts at entry {done.last + 1}; head "
          f"{done.head}")
    print(f"check it with: herald audit verify --archive {done.path} (older archives first)", file=sys.stderr)
    return EXIT_OK


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"
