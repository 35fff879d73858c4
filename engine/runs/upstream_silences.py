"""Mutes mirrored into Alertmanager as silences (`[alerts] alertmanager_url`), so the source stops sending too.

A Mute pressed on an alert that came from Alertmanager creates a silence there through its API v2
(`POST /api/v2/silences`: one equality matcher per label of the alert, ending when the mute ends, created by the
person who pressed). The silence's id is kept with the alert; when the alert resolves, Herald expires the silence
(`DELETE /api/v2/silence/{id}`), so a mute never outlives its alert on either side. Alertmanager being away never
fails the mute: Herald's own mute holds, the person is told the silence could not be made, and it is logged and
audited (`silence.upstream_failed`).

A rule's `silence alert by FIELD for D` is mirrored the same way (`mirror_alert`), with the labels of the alert whose
fingerprint it silences. Herald also follows what is changed in Alertmanager itself: see engine/runs/silence_sync.py,
which keeps the silences made there for alerts Herald holds in `am_silenced`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from engine.core.events import AlertData, Event
from engine.core.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS upstream_silences (
    fingerprint TEXT PRIMARY KEY,
    silence_id TEXT NOT NULL,
    until TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS am_silenced (
    fingerprint TEXT PRIMARY KEY,
    silence_id TEXT NOT NULL,
    until TEXT NOT NULL
);
"""
TIMEOUT_S = 5.0
log = logging.getLogger("herald.silences")

Audit = Callable[..., Awaitable[None]]


class UpstreamSilences:
    def __init__(self, db: Database, url: Callable[[], str | None], http: Callable[[], aiohttp.ClientSession],
                 audit: Audit) -> None:
        self._db = db
        self._url = url  # read at each use: a config reload may change it
        self._http = http
        self._audit = audit

    async def mirror(self, source_event: str | None, until: datetime, by: str) -> str:
        """Silence in Alertmanager the alert the event `source_event` carried, until `until`; returns a few words
        for the person who muted it ("" when there is nothing to mirror)."""
        alert = await self._alert(source_event) if self._url() else None
        if alert is None:
            return ""
        made = await self.mirror_alert(alert, until, by, comment=f"Muted from Herald by {by}")
        return " Silenced in Alertmanager too." if made else \
            " Alertmanager could not be told (see the log); Herald's mute holds."

    async def mirror_rule(self, fingerprint: str, until: datetime, by: str, rule: str) -> None:
        """A rule's `silence alert by ...` muted the alert `fingerprint`: silence it in Alertmanager too, if it came
        from there."""
        if not self._url():
            return
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT id FROM events WHERE alert = ? ORDER BY id DESC LIMIT 1", (fingerprint,)).fetchone())
        alert = await self._alert(row["id"]) if row is not None else None
        if alert is not None:
            await self.mirror_alert(alert, until, by, comment=f"Silenced by Herald rule {rule}")

    async def mirror_alert(self, alert: AlertData, until: datetime, by: str, *, comment: str) -> bool:
        """Make (or move the end of) the Alertmanager silence of `alert`: one equality matcher per label. False
        when Alertmanager could not be told (logged and audited)."""
        base = self._url()
        if base is None:
            return False
        earlier = await self.silence_of(alert.fingerprint)
        body: dict[str, Any] = {
            "matchers": [{"name": name, "value": value, "isRegex": False, "isEqual": True}
                         for name, value in sorted(alert.labels.items())],
            # to the millisecond, as Alertmanager answers: its UI posts the times back, and an edit of a silence whose
            # start it shows exactly keeps the silence (and its id) instead of replacing it
            "startsAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "endsAt": until.isoformat(timespec="milliseconds"), "createdBy": by,
            "comment": comment}
        if earlier is not None:  # Alertmanager updates it in place (or expires it and answers with a new id)
            body["id"] = earlier
        try:
            try:
                answer = await self._call("POST", f"{base}/api/v2/silences", body)
            except aiohttp.ClientResponseError as exc:
                if exc.status != 404 or "id" not in body:
                    raise
                del body["id"]  # Alertmanager has forgotten the earlier one: a new silence, then
                answer = await self._call("POST", f"{base}/api/v2/silences", body)
            silence_id = str(answer["silenceID"])
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            await self._failed("create", alert.fingerprint, exc, by)
            return False
        await self.remember(alert.fingerprint, silence_id, until)
        await self._audit("silence.upstream", by, alert=alert.fingerprint, silence=silence_id, until=until.isoformat())
        return True

    async def silence_of(self, fingerprint: str) -> str | None:
        """The id of the Alertmanager silence Herald made for the alert, if any."""
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT silence_id FROM upstream_silences WHERE fingerprint = ?", (fingerprint,)).fetchone())
        return None if row is None else str(row["silence_id"])

    async def remember(self, fingerprint: str, silence_id: str, until: datetime) -> None:
        await self._db.write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO upstream_silences (fingerprint, silence_id, until) VALUES (?, ?, ?)",
            (fingerprint, silence_id, until.isoformat())))

    async def forget(self, fingerprint: str) -> None:
        await self._db.write(lambda conn: conn.execute(
            "DELETE FROM upstream_silences WHERE fingerprint = ?", (fingerprint,)))

    async def lift(self, fingerprint: str) -> None:
        """The alert resolved: expire the silence made for it, if any."""
        await self._db.write(lambda conn: conn.execute(
            "DELETE FROM am_silenced WHERE fingerprint = ?", (fingerprint,)))  # Alertmanager's own ends by itself
        silence_id = await self.silence_of(fingerprint)
        base = self._url()
        if silence_id is None or base is None:
            return
        try:
            await self._call("DELETE", f"{base}/api/v2/silence/{silence_id}", None)
        except aiohttp.ClientResponseError as exc:
            if exc.status != 404:  # already gone (expired, or removed in Alertmanager's UI): nothing to undo
                await self._failed("expire", fingerprint, exc, "system")
                return
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._failed("expire", fingerprint, exc, "system")
            return
        await self.forget(fingerprint)
        await self._audit("silence.upstream_expired", "system", alert=fingerprint, silence=silence_id)

    async def _alert(self, event_id: str | None) -> AlertData | None:
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()) if event_id else None
        if row is None:
            return None
        event = Event.model_validate_json(row["body"])
        return event.data if isinstance(event.data, AlertData) and event.source == "alertmanager" else None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A call to Alertmanager's API (`path` after its address, with a JSON `body`); aiohttp.ClientError or
        TimeoutError when it is away, ValueError when it is not configured."""
        base = self._url()
        if base is None:
            raise ValueError("no alertmanager_url")
        return await self._call(method, f"{base}{path}", body)

    async def _call(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        async with self._http().request(method, url, json=body, raise_for_status=True,
                                        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as response:
            return await response.json(content_type=None)

    async def _failed(self, what: str, fingerprint: str, exc: BaseException, by: str) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("could not %s the Alertmanager silence of alert %s: %s", what, fingerprint, reason)
        await self._audit("silence.upstream_failed", by, alert=fingerprint, step=what, reason=reason)
