"""Herald's view of silences kept in step with Alertmanager's (`[alerts] alertmanager_url`, issue 19).

Every `alertmanager_sync_s` (30 s by default) Herald reads `GET /api/v2/silences` and follows what changed there:

- a silence Herald made (a Mute, a rule's `silence alert`) that was expired in Alertmanager before its time: Herald's
  mute ends too; one whose end was moved (extended or shortened in Alertmanager's UI, which keeps the id): Herald's
  mute ends at the new time. Audited `silence.upstream_changed` (`change`: expired, extended or shortened; `by`: the
  silence's `createdBy`, the name Alertmanager's UI asks for on an edit; nobody is recorded for an expiry);
- a silence made in Alertmanager itself whose matchers cover a firing Alertmanager alert Herald holds: the alert is
  muted in Herald as "Silenced in Alertmanager by X until T" (audited `silence.upstream_seen`), so Herald's own
  notifications and escalation steps for it stop too, as Alertmanager's do; when that silence ends, expires or stops
  covering the alert, so does the mute (`silence.upstream_ended`). A longer mute of Herald's own is left as it is.
- a Herald silence by labels (`silence alert where ...`, engine.runs.herald_silences) is Herald's own too: its
  Alertmanager twin is never taken for one made there, and expired there before its time, Herald's silence ends.

Each change edits the alert's messages (Delivery.follow). Matchers follow Alertmanager's semantics: a missing label
is the empty string; `isRegex` is anchored at both ends (Python's `re.fullmatch` stands in for Go's RE2: see
docs/webhooks.md for where they differ); `isEqual: false` negates. An Alertmanager that cannot be read is logged
once per outage (`reachable` is False until it answers again, and `/metrics` shows it); the loop never ends on it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp

from engine.core.store import Database
from engine.delivery.outlets import AlertStatus
from engine.runs import herald_silences
from engine.runs.alert_board import AlertBoard
from engine.runs.alerts import AlertState
from engine.runs.upstream_silences import Audit, UpstreamSilences

ALERTMANAGER = "Alertmanager"  # what `muted_in` says for a silence made there
SAME_END = timedelta(seconds=1)  # Alertmanager keeps times to the millisecond; Herald's ISO text to the microsecond
log = logging.getLogger("herald.silences")


class Follow(Protocol):
    def __call__(self, fingerprint: str, status: AlertStatus, *, reshow: bool = False) -> Awaitable[object]: ...


@dataclass(frozen=True)
class Matcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool
    pattern: re.Pattern[str] | None

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.is_regex:
            hit = self.pattern is not None and self.pattern.fullmatch(have) is not None
        else:
            hit = have == self.value
        return hit == self.is_equal


@dataclass(frozen=True)
class Silence:
    id: str
    state: str  # active, pending, expired
    ends_at: datetime
    created_by: str
    comment: str
    matchers: tuple[Matcher, ...]

    def covers(self, labels: dict[str, str]) -> bool:
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)


def parse_silence(raw: Any) -> Silence | None:
    """One silence of `GET /api/v2/silences`, or None for one this version cannot read (skipped, not fatal)."""
    try:
        matchers = []
        for m in raw["matchers"]:
            is_regex = bool(m.get("isRegex", False))
            pattern = None
            if is_regex:
                try:
                    pattern = re.compile(str(m["value"]))
                except re.error:  # valid RE2 that Python reads differently: this matcher matches nothing here
                    log.warning("silence %s: regex %r is not one Python can read", raw.get("id"), m["value"])
            matchers.append(Matcher(str(m["name"]), str(m["value"]), is_regex, bool(m.get("isEqual", True)), pattern))
        return Silence(id=str(raw["id"]), state=str(raw["status"]["state"]),
                       ends_at=datetime.fromisoformat(str(raw["endsAt"]).replace("Z", "+00:00")),
                       created_by=str(raw.get("createdBy") or ""), comment=str(raw.get("comment") or ""),
                       matchers=tuple(matchers))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


class SilenceSync:
    def __init__(self, *, db: Database, upstream: UpstreamSilences, alerts: AlertState, board: AlertBoard,
                 follow: Follow, audit: Audit, url: Callable[[], str | None], every_s: Callable[[], float],
                 end: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self._db = db
        self._upstream = upstream
        self._alerts = alerts
        self._board = board
        self._follow = follow
        self._audit = audit
        self._url = url  # both read at each round: a config reload may change them
        self._every_s = every_s
        self._end_silence = end  # ends a Herald silence by labels (engine.runs.herald_silences.end)
        self.reachable: bool | None = None  # None: not asked yet (or no Alertmanager configured)

    async def run(self) -> None:
        """The engine's background task: one round now and then, while an Alertmanager is configured."""
        while True:
            if self._url() is not None:
                await self.sync()
            else:
                self.reachable = None
            await asyncio.sleep(self._every_s())

    async def sync(self) -> None:
        """One round: read Alertmanager's silences and follow them."""
        try:
            raw = await self._upstream.call("GET", "/api/v2/silences")
            if not isinstance(raw, list):
                raise ValueError("the answer is not a list of silences")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self.reachable is not False:  # once per outage, not once per round
                log.warning("cannot read Alertmanager's silences (%s: %s); Herald follows them again when it "
                            "answers", type(exc).__name__, str(exc)[:200])
            self.reachable = False
            return
        if self.reachable is False:
            log.info("Alertmanager answers again; its silences are followed")
        self.reachable = True
        silences = [s for s in map(parse_silence, raw) if s is not None]
        await self._follow_ours({s.id: s for s in silences})
        await self._follow_herald_silences({s.id: s for s in silences})
        ours = set(await self._db.call(lambda conn: [r[0] for r in conn.execute(
            "SELECT silence_id FROM upstream_silences UNION "
            "SELECT upstream_id FROM herald_silences WHERE upstream_id IS NOT NULL")]))
        await self._follow_theirs([s for s in silences if s.state == "active" and s.id not in ours])

    async def _follow_ours(self, by_id: dict[str, Silence]) -> None:
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT fingerprint, silence_id, until FROM upstream_silences").fetchall())
        for row in rows:
            fingerprint, until = row["fingerprint"], datetime.fromisoformat(row["until"])
            silence = by_id.get(row["silence_id"])
            if silence is not None and silence.state != "expired":
                if abs(silence.ends_at - until) > SAME_END:
                    await self._moved(fingerprint, silence, until)
                continue
            await self._upstream.forget(fingerprint)
            if silence is None or silence.ends_at >= until - SAME_END:
                continue  # it ended at its time (or Alertmanager forgot it long after): Herald's mute ended too
            status = await self._alerts.status(fingerprint)
            if status.muted_until is not None and status.muted_in is None:
                await self._alerts.unmute(fingerprint)
            self._board.muted(fingerprint, None)
            await self._audit("silence.upstream_changed", "alertmanager", alert=fingerprint, silence=silence.id,
                              change="expired", created_by=silence.created_by)
            await self._follow(fingerprint, await self._alerts.status(fingerprint), reshow=True)

    async def _follow_herald_silences(self, by_id: dict[str, Silence]) -> None:
        """A Herald silence by labels whose Alertmanager twin was expired there before its time ends too."""
        silences = await self._db.call(herald_silences.active)
        for ours in silences:
            twin = by_id.get(ours.upstream_id or "")
            if twin is None or twin.state != "expired":
                continue  # in force there (or forgotten by Alertmanager long after, as _follow_ours takes it)
            if ours.upstream_until is not None and twin.ends_at >= ours.upstream_until - SAME_END:
                continue  # ended at its time: Herald's own timer ends Herald's
            if self._end_silence is None:
                continue
            await self._audit("silence.upstream_changed", "alertmanager", silence=ours.id, upstream=ours.upstream_id,
                              change="expired", created_by=twin.created_by)
            await self._end_silence(ours.id, "expired in Alertmanager")

    async def _moved(self, fingerprint: str, silence: Silence, until: datetime) -> None:
        """The end of a silence Herald made was moved in Alertmanager: Herald's mute ends then too."""
        await self._upstream.remember(fingerprint, silence.id, silence.ends_at)
        by = silence.created_by or (await self._alerts.status(fingerprint)).muted_by or "someone"
        await self._alerts.mute_until(fingerprint, by, silence.ends_at)
        self._board.muted(fingerprint, silence.ends_at)
        await self._audit("silence.upstream_changed", "alertmanager", alert=fingerprint, silence=silence.id,
                          change="extended" if silence.ends_at > until else "shortened", by=silence.created_by,
                          until=silence.ends_at.isoformat(timespec="seconds"))
        await self._follow(fingerprint, await self._alerts.status(fingerprint))

    async def _follow_theirs(self, active: list[Silence]) -> None:
        wanted: dict[str, Silence] = {}  # alert -> the silence made in Alertmanager that covers it longest
        for alert in self._board.firing_from("alertmanager"):
            for silence in active:
                best = wanted.get(alert.fingerprint)
                if silence.covers(alert.labels) and (best is None or silence.ends_at > best.ends_at):
                    wanted[alert.fingerprint] = silence
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT fingerprint, silence_id, until FROM am_silenced").fetchall())
        shown = {row["fingerprint"]: (row["silence_id"], datetime.fromisoformat(row["until"])) for row in rows}
        for fingerprint, silence in wanted.items():
            before = shown.get(fingerprint)
            if before is not None and before[0] == silence.id and abs(before[1] - silence.ends_at) <= SAME_END:
                continue
            status = await self._alerts.status(fingerprint)
            if before is None and status.muted_until is not None and status.muted_in is None \
                    and status.muted_until >= silence.ends_at:
                continue  # Herald's own mute lasts longer: it stays what the messages show
            await self._alerts.mute_until(fingerprint, silence.created_by or "someone", silence.ends_at,
                                          muted_in=ALERTMANAGER)
            await self._db.write(lambda conn, f=fingerprint, s=silence: conn.execute(
                "INSERT OR REPLACE INTO am_silenced (fingerprint, silence_id, until) VALUES (?, ?, ?)",
                (f, s.id, s.ends_at.isoformat())))
            self._board.muted(fingerprint, silence.ends_at)
            await self._audit("silence.upstream_seen", "alertmanager", alert=fingerprint, silence=silence.id,
                              by=silence.created_by, until=silence.ends_at.isoformat(timespec="seconds"),
                              comment=silence.comment[:200])
            await self._follow(fingerprint, await self._alerts.status(fingerprint))
        for fingerprint, (silence_id, _) in shown.items():
            if fingerprint not in wanted:
                await self._ended(fingerprint, silence_id)

    async def _ended(self, fingerprint: str, silence_id: str) -> None:
        """The Alertmanager silence shown on the alert ended, was expired or no longer covers it."""
        await self._db.write(lambda conn: conn.execute("DELETE FROM am_silenced WHERE fingerprint = ?",
                                                       (fingerprint,)))
        status = await self._alerts.status(fingerprint)
        if status.muted_in == ALERTMANAGER:
            await self._alerts.unmute(fingerprint)
            self._board.muted(fingerprint, None)
        await self._audit("silence.upstream_ended", "alertmanager", alert=fingerprint, silence=silence_id)
        await self._follow(fingerprint, await self._alerts.status(fingerprint), reshow=True)
