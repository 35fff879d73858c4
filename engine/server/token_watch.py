"""Keeping an open `/api/v1/stream` honest about its token: checked once when the socket opens is not enough, since
a stream can stay open for days. `watch_token` runs next to the stream's pump, checks the token again every
`RECHECK_S` seconds and at its expiry, and closes the socket with the reason when the token is revoked, has expired
or its signing key was retired."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from engine.core.errors import AuthError
from engine.core.store import Database
from engine.security import keys

RECHECK_S = 5.0  # how long a revoked token may keep an open stream at most (one indexed lookup per stream)
CLOSE_CODE = 1008  # "policy violation": the client should not reconnect with the same token
_AFTER_EXPIRY_S = 0.05  # JWT times are whole seconds: check just after `exp`, when the token is surely expired
_MAX_REASON_BYTES = 123  # a close frame holds 125 bytes, 2 of them the code


def bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()


async def watch_token(ws: web.WebSocketResponse, db: Database, token: str, *, purpose: str) -> None:
    """Until the socket closes: re-verify `token`; on refusal, close the socket saying why."""
    while not ws.closed:
        try:
            claims = await db.call(keys.verify, token, purpose=purpose)
        except AuthError as exc:
            reason = f"API token refused: {exc}".encode()[:_MAX_REASON_BYTES]
            await ws.close(code=CLOSE_CODE, message=reason)
            return
        until_expiry = float(claims["exp"]) - time.time() + _AFTER_EXPIRY_S
        await asyncio.sleep(max(0.0, min(RECHECK_S, until_expiry)))
