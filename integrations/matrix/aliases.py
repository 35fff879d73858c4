"""Room aliases (`#ops:example.org`) as addresses: resolved to room ids when Herald starts, and on first use.

An alias is a name pointing at a room, kept by the alias's homeserver and re-pointable. Herald asks the homeserver
(`GET /_matrix/client/v3/directory/room/{roomAlias}`, "Requests that the server resolve a room alias to a room ID";
404 `M_NOT_FOUND` when there is no such alias; https://spec.matrix.org/latest/client-server-api/#room-aliases) and
sends to the room id it answers. Everything Herald keeps per conversation is kept under the room id
(engine.delivery NamesChats), because that is what replies, numbered choices and reactions in the room carry.

Resolved aliases are remembered in the integration's store, so a restart starts with the last answer while it asks
again (an alias moved to another room is followed from the next start on). The aliases asked about at start are
the config's team targets and every alias used before; an alias that does not exist is logged there as an error,
and a notification to it fails as Rejected saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

import aiohttp
from nio import RoomResolveAliasResponse

from engine.plugin import KeyValue, Rejected, Unavailable
from integrations.matrix.session import Session

log = logging.getLogger("herald.matrix")
KNOWN_KEY = "aliases"  # the store's list of every alias Herald was asked to use
FIRST_USE_WAIT_S = 5.0  # how long a notification's delivery waits for an alias it has not resolved yet


def is_alias(chat: str) -> bool:
    return chat.startswith("#")


class Aliases:
    def __init__(self, session: Session, store: KeyValue) -> None:
        self._session = session
        self._store = store
        self._rooms: dict[str, str] = {}  # alias -> room id, as last resolved
        self._started = asyncio.Event()  # set once the aliases known at start were asked about
        self._writing = asyncio.Lock()  # the list of known aliases is read, extended and written back

    async def start(self, configured: Iterable[str]) -> None:
        """Resolve the config's aliases and every alias used before (the session is logged in); log the missing."""
        known = set(json.loads(await self._store.get(KNOWN_KEY) or "[]")) | set(configured)
        for alias in sorted(known):
            stored = await self._store.get(f"alias:{alias}")
            if stored:
                self._rooms[alias] = stored  # the last answer, until the homeserver gives a new one
        try:
            for alias in sorted(known):
                try:
                    await self.resolve(alias)
                except Rejected as exc:
                    log.error("matrix: %s; notifications to it fail until the alias exists", exc)
                except Unavailable as exc:
                    log.warning("matrix: could not resolve %s at start (%s); asked again on first use", alias, exc)
        finally:
            self._started.set()

    def known(self, alias: str) -> str | None:
        return self._rooms.get(alias)

    async def room_for(self, alias: str) -> str:
        """The alias's room id, for a notification about to be queued: the known one, or asked for once now (a
        short wait); the alias itself when it cannot be resolved now (the send then says why, or retries)."""
        if alias in self._rooms:
            return self._rooms[alias]
        try:
            async with asyncio.timeout(FIRST_USE_WAIT_S):
                await self._started.wait()
                if alias in self._rooms:
                    return self._rooms[alias]
                return await self.resolve(alias)
        except (TimeoutError, Rejected, Unavailable):
            return alias

    async def resolve(self, alias: str) -> str:
        """Ask the homeserver for the alias's room id (and remember it); Rejected if there is no such alias,
        Unavailable if the homeserver cannot answer now."""
        if not self._session.ready:
            raise Unavailable("not logged in to the homeserver yet")
        try:
            answer = await self._session.client.room_resolve_alias(alias)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"homeserver unreachable: {type(exc).__name__}") from None
        if not isinstance(answer, RoomResolveAliasResponse):
            status = getattr(getattr(answer, "transport_response", None), "status", None)
            if answer.status_code == "M_NOT_FOUND" or status == 404:
                raise Rejected(f"the room alias {alias} does not exist on the homeserver")
            if status is None or status >= 500 or status == 429:
                raise Unavailable(f"resolving {alias}: {answer.status_code or status or 'no answer'}")
            raise Rejected(f"resolving {alias}: {answer.status_code}: {answer.message}")
        room = str(answer.room_id)
        if self._rooms.get(alias) != room:
            log.info("matrix: room alias %s is %s", alias, room)
            await self._store.put(f"alias:{alias}", room)
        self._rooms[alias] = room
        await self._remember(alias)
        return room

    async def _remember(self, alias: str) -> None:
        async with self._writing:
            known = set(json.loads(await self._store.get(KNOWN_KEY) or "[]"))
            if alias not in known:
                await self._store.put(KNOWN_KEY, json.dumps(sorted(known | {alias})))
