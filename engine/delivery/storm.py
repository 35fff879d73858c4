"""Alert storms: when many alerts hit one audience (a team) at once, one digest message per conversation, edited as
alerts arrive, instead of hundreds of messages that run into the platforms' rate limits.

Per audience, up to `[alerts] storm_threshold` alert notifications within `storm_window_s` (engine time) go out one
by one. The next one starts a storm: each conversation of the audience gets ONE digest message ("⚠ Alert storm for
ops: 37 more alerts since 02:14 UTC" and one compact line per alert), and every further alert notification to that
audience becomes a line of it. Edits are coalesced here (a burst of changes waits `DIGEST_DEBOUNCE_S` and becomes one
re-render; at most one re-render of a digest every `DIGEST_EDIT_S`) and again by each platform's sender (its own edit
interval). Once no alert has overflowed for the window, the storm is over: the next alert is sent on its own, and a
later storm starts a new digest.

A digest's lines follow their alerts (acknowledged, muted, escalated, resolved: `Delivery.follow` calls `follow`) for
as long as any alert it lists lives, storm over or not: a resolve ends an alert's link to its line (its next firing is
news again), and a finished digest whose alerts have all resolved is re-rendered a last time and then forgotten, as is
one older than the outbox keeps message references (`KEEP_DONE_S`).

Durable: the storm's state (its digest, the conversations it went to, every line it lists, and the times of the
alerts sent one by one) is in the engine's database, written before `notify` returns; a finished digest still
followed is in `finished_storms`, and its lines stay. At start, a storm still within its window continues with the
same digest (and its messages, whose references are in the outbox), and each digest still followed is re-rendered
once, so a line or state written just before a crash still reaches the message. A replayed notification (same key) is
listed once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine.core.events import AlertData
from engine.core.ids import new_id
from engine.core.store import Database
from engine.delivery.message import Conversation
from engine.delivery.outbox import KEEP_DONE_S

log = logging.getLogger("herald.delivery")

SCHEMA = """
CREATE TABLE IF NOT EXISTS storms (
    team TEXT PRIMARY KEY,
    recent TEXT NOT NULL DEFAULT '[]',
    digest TEXT,
    started REAL,
    last REAL,
    conversations TEXT
);
CREATE TABLE IF NOT EXISTS storm_lines (
    digest TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    fingerprint TEXT,
    line TEXT NOT NULL,
    mark TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (digest, key)
);
CREATE TABLE IF NOT EXISTS finished_storms (
    digest TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    started REAL NOT NULL,
    last REAL NOT NULL,
    conversations TEXT NOT NULL
);
"""

DIGEST_EDIT_S = 2.0  # a digest is re-rendered at most this often, however fast alerts arrive
DIGEST_DEBOUNCE_S = 0.25  # a burst of changes (a resolve of 500 alerts) waits this long to become one re-render
FOLLOW_S = KEEP_DONE_S  # a finished digest follows its alerts this long after it was sent: then its reference is gone
SUMMARY_CHARS = 60
RULE = "alert storm"  # the digest's rule name, as Herald's chat and the audit show it
MORE = "… and {n} more, see `herald alerts list`"

Policy = Callable[[], tuple[int, float]]  # (threshold, window in seconds), read from the current config each time


@dataclass
class Digest:
    """One storm's digest: what it lists, and the conversations its message went to (by the address that named
    each, as `Delivery.notify` keys messages). `fingerprints`: the lines of alerts that still live (not resolved);
    `over`: the storm has ended (no more lines; still edited while some alert it lists lives)."""

    id: str
    team: str
    started: float
    last: float
    conversations: dict[str, Conversation] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    fingerprints: dict[str, list[int]] = field(default_factory=dict)
    over: bool = False

    def message_key(self, address: str) -> str:
        return f"storm/{self.id}/{address}"

    def text(self, limit: int | None = None) -> str:
        """The digest as a person reads it; with `limit`, whole lines only and an honest count of the rest."""
        count = len(self.lines)
        head = (f"⚠ Alert storm for {self.team}: {count} more alert{'s' if count != 1 else ''} since "
                f"{datetime.fromtimestamp(self.started, UTC):%H:%M} UTC")
        body = [line + mark for line, mark in zip(self.lines, self.marks, strict=True)]
        text = "\n".join([head, *body])
        if limit is None or len(text) <= limit:
            return text
        kept, size = [head], len(head)
        for n, line in enumerate(body):
            cut = MORE.format(n=count - n)
            if size + 1 + len(line) + 1 + len(MORE.format(n=count - n - 1)) > limit:
                return "\n".join([*kept, cut])[:limit]
            kept.append(line)
            size += 1 + len(line)
        return "\n".join(kept)[:limit]


@dataclass(frozen=True)
class Turn:
    """Where an alert notification goes: into `digest` (`new`: its first line, so its messages are sent now), or,
    when `listed`, nowhere (a replay of one it already lists)."""

    digest: Digest
    new: bool
    listed: bool


@dataclass
class _Audience:
    recent: deque[float] = field(default_factory=deque)  # when alerts went out one by one, within the window
    digest: Digest | None = None


def alert_line(data: AlertData) -> str:
    """An alert as one line of a digest: severity, name, service/instance, summary cut short."""
    where = "/".join(part for part in (data.service, data.labels.get("instance")) if part)
    summary = (data.summary or "").replace("\n", " ").strip()
    if len(summary) > SUMMARY_CHARS:
        summary = summary[:SUMMARY_CHARS - 1].rstrip() + "…"
    head = " ".join(part for part in ((data.severity or "unknown").upper(), data.name or data.fingerprint,
                                      where and f"({where})") if part)
    return f"• {head}" + (f": {summary}" if summary else "")


class Storms:
    """The storm state of every audience, in memory and in the database; decisions are taken without awaiting, so
    alerts handled side by side (different dispatch lanes) are counted exactly."""

    def __init__(self, db: Database, *, policy: Policy, now: Callable[[], float]) -> None:
        self._db = db
        self._policy = policy
        self._now = now
        self._audiences: dict[str, _Audience] = {}
        self._by_fingerprint: dict[str, list[Digest]] = {}
        self._dirty: set[str] = set()
        self._live: dict[str, Digest] = {}  # every digest still re-rendered: running, or over with alerts that live
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, edit: Callable[[Digest], Awaitable[None]]) -> None:
        """Load what a stop or crash left, then keep re-rendering digests as lines arrive (through `edit`)."""
        rows, finished, lines = await self._db.call(lambda conn: (
            conn.execute("SELECT * FROM storms").fetchall(),
            conn.execute("SELECT * FROM finished_storms").fetchall(),
            conn.execute("SELECT * FROM storm_lines WHERE digest IN (SELECT digest FROM storms UNION "
                         "SELECT digest FROM finished_storms) ORDER BY n").fetchall()))
        for row in rows:
            audience = self._audiences.setdefault(row["team"], _Audience())
            audience.recent.extend(json.loads(row["recent"]))
            if row["digest"] is not None:
                audience.digest = self._load(row, over=False)
        for row in finished:
            self._load(row, over=True)
        for line in lines:
            digest = self._live.get(line["digest"])
            if digest is not None:
                self._list(digest, line["key"], line["fingerprint"], line["line"], line["mark"])
        now = self._now()
        for digest in [d for d in self._live.values() if d.over and now - d.started >= FOLLOW_S]:
            self._retire(digest)  # its message's reference is no longer kept: an edit would be a new message
        self._dirty.update(self._live)  # a line or state written just before a crash reaches the message now
        self._flusher = asyncio.create_task(self._flush(edit), name="storm-digests")
        if self._dirty:
            self._wake.set()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    # -- what Delivery.notify asks -----------------------------------------------------------------------------

    def admit(self, team: str, key: str) -> Turn | None:
        """Decide where an alert notification to `team` goes: None, on its own (and counted); else a `Turn`."""
        threshold, window = self._policy()
        if threshold <= 0:  # storms off: nothing to count (counting anyway kept every alert of the window)
            return None
        audience = self._audiences.setdefault(team, _Audience())
        now = self._now()
        digest = audience.digest
        if digest is not None and now - digest.last >= window:  # the storm is over; its lines still follow alerts
            self._end(audience, digest)
            digest = None
        if digest is not None:
            if key in digest.keys:
                return Turn(digest, new=False, listed=True)
            digest.last = now
            return Turn(digest, new=False, listed=False)
        while audience.recent and now - audience.recent[0] >= window:
            audience.recent.popleft()
        if len(audience.recent) < threshold:
            audience.recent.append(now)
            recent = json.dumps(list(audience.recent))
            self._db.write_soon(lambda conn: conn.execute(
                "INSERT INTO storms (team, recent) VALUES (?, ?) ON CONFLICT (team) DO UPDATE SET recent = ?",
                (team, recent, recent)))
            return None
        audience.digest = digest = Digest(id=new_id(), team=team, started=now, last=now)
        self._live[digest.id] = digest
        log.warning("alert storm for %s: more than %d alert notifications within %gs; further ones go into one "
                    "digest message", team, threshold, window)
        return Turn(digest, new=True, listed=False)

    def add(self, turn: Turn, *, key: str, fingerprint: str | None, line: str) -> asyncio.Future[None]:
        """List an alert in the turn's digest; the returned future resolves once that is durable."""
        digest = turn.digest
        self._list(digest, key, fingerprint, line, "")
        n = len(digest.lines)
        conversations = json.dumps({address: c.model_dump(exclude_none=True)
                                    for address, c in digest.conversations.items()})
        if not turn.new:
            self.changed(digest)

        def _save(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO storms (team, digest, started, last, conversations) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (team) DO UPDATE SET digest = excluded.digest, started = excluded.started, "
                         "last = excluded.last, conversations = excluded.conversations",
                         (digest.team, digest.id, digest.started, digest.last, conversations))
            conn.execute("INSERT OR IGNORE INTO storm_lines (digest, key, n, fingerprint, line) VALUES (?, ?, ?, ?, ?)",
                         (digest.id, key, n, fingerprint, line))

        return self._db.write_nowait(_save)

    # -- what Delivery.follow asks ---------------------------------------------------------------------------

    def follow(self, fingerprint: str, mark: str, *, resolved: bool = False) -> None:
        """Show an alert's new state (` — ✔ resolved`) on its lines in every digest that lists it, running or over;
        re-rendered at the next coalesced round. `resolved` ends the alert's link to those lines (a later firing is a
        new line, or a notification of its own)."""
        now = self._now()
        for digest in list(self._by_fingerprint.get(fingerprint, ())):
            if digest.over and now - digest.started >= FOLLOW_S:
                self._retire(digest)
                continue
            lines = digest.fingerprints.get(fingerprint, [])
            changed = [n for n in lines if digest.marks[n] != mark]
            for n in changed:
                digest.marks[n] = mark
            if resolved:
                self._unlink(digest, fingerprint)
            if changed or resolved:
                self._db.write_soon(lambda conn, d=digest.id: conn.execute(
                    "UPDATE storm_lines SET mark = ?, fingerprint = CASE WHEN ? THEN NULL ELSE fingerprint END "
                    "WHERE digest = ? AND fingerprint = ?", (mark, resolved, d, fingerprint)))
            if changed:
                self.changed(digest)
            audience = self._audiences.get(digest.team)
            if not digest.over and audience is not None and audience.digest is digest \
                    and now - digest.last >= self._policy()[1]:
                self._end(audience, digest)  # noticed here too, so a quiet team's last digest can be let go
            elif digest.over and not digest.fingerprints and digest.id not in self._dirty:
                self._retire(digest)  # nothing left to show: its message already says all there is

    def changed(self, digest: Digest) -> None:
        """Re-render `digest` soon (one re-render for a burst of changes, at most once every DIGEST_EDIT_S)."""
        self._dirty.add(digest.id)
        self._wake.set()

    # -- inside ----------------------------------------------------------------------------------------------

    def _load(self, row: sqlite3.Row, *, over: bool) -> Digest:
        conversations = {address: Conversation.model_validate(c)
                         for address, c in json.loads(row["conversations"] or "{}").items()}
        digest = Digest(id=row["digest"], team=row["team"], started=row["started"], last=row["last"],
                        conversations=conversations, over=over)
        self._live[digest.id] = digest
        return digest

    def _list(self, digest: Digest, key: str, fingerprint: str | None, line: str, mark: str) -> None:
        if key in digest.keys:
            return
        digest.keys.add(key)
        digest.lines.append(line)
        digest.marks.append(mark)
        if fingerprint is not None:
            digest.fingerprints.setdefault(fingerprint, []).append(len(digest.lines) - 1)
            known = self._by_fingerprint.setdefault(fingerprint, [])
            if digest not in known:
                known.append(digest)

    def _unlink(self, digest: Digest, fingerprint: str) -> None:
        digest.fingerprints.pop(fingerprint, None)
        known = self._by_fingerprint.get(fingerprint, [])
        if digest in known:
            known.remove(digest)
        if not known:
            self._by_fingerprint.pop(fingerprint, None)

    def _end(self, audience: _Audience, digest: Digest) -> None:
        """The storm is over: no more lines; the digest stays followed while an alert it lists lives."""
        audience.digest = None
        audience.recent.clear()
        digest.over = True
        log.info("alert storm for %s is over after %d alerts in its digest", digest.team, len(digest.lines))
        conversations = json.dumps({address: c.model_dump(exclude_none=True)
                                    for address, c in digest.conversations.items()})

        def _finish(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE storms SET digest = NULL, recent = '[]' WHERE team = ? AND digest = ?",
                         (digest.team, digest.id))
            conn.execute("INSERT OR REPLACE INTO finished_storms (digest, team, started, last, conversations) "
                         "VALUES (?, ?, ?, ?, ?)", (digest.id, digest.team, digest.started, digest.last,
                                                    conversations))

        self._db.write_soon(_finish)
        if not digest.fingerprints and digest.id not in self._dirty:
            self._retire(digest)

    def _retire(self, digest: Digest) -> None:
        """Forget a finished digest: its message stays as last rendered."""
        self._live.pop(digest.id, None)
        self._dirty.discard(digest.id)
        for fingerprint in list(digest.fingerprints):
            self._unlink(digest, fingerprint)

        def _forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM finished_storms WHERE digest = ?", (digest.id,))
            conn.execute("DELETE FROM storm_lines WHERE digest = ?", (digest.id,))

        self._db.write_soon(_forget)

    async def _flush(self, edit: Callable[[Digest], Awaitable[None]]) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(DIGEST_DEBOUNCE_S)  # the rest of a burst (the other 499 resolves) joins this round
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for digest_id in sorted(dirty):
                digest = self._live.get(digest_id)
                if digest is None:
                    continue
                try:
                    await edit(digest)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failed write: try again with the next round
                    log.exception("re-rendering the alert storm digest for %s failed", digest.team)
                    self._dirty.add(digest_id)
                    continue
                if digest.over and not digest.fingerprints and digest_id not in self._dirty:
                    self._retire(digest)  # its last state is in the outbox: the message is final
            await asyncio.sleep(DIGEST_EDIT_S)
