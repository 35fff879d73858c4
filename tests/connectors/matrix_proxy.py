"""A small reverse proxy between the Matrix connector and the real Synapse, for two faults Synapse won't make on cue.

Everything passes through unchanged except, when a test asks for it:
- `rate_limit_next_send(s)`: the next `PUT /rooms/{room}/send/...` is answered, instead of forwarded, with HTTP 429
  and the error the client-server API specifies (https://spec.matrix.org/latest/client-server-api/#rate-limiting):
  "If a request is refused due to rate limiting, it should return a standard error response of the form:
  {"errcode": "M_LIMIT_EXCEEDED", "error": "string", "retry_after_ms": integer (optional, deprecated)}" and
  "Homeservers SHOULD include a Retry-After header for any response with a 429 status code." (Synapse's own 429,
  "Too Many Requests", is tested separately: test_matrix.py lowers the bot's limit through the admin API.)
- `drop_syncs()`: the `/sync` long polls in flight are cut (their TCP connections closed), as a network drop would.

It is honest about being a fault injector: nothing else is changed, and every other answer is Synapse's own.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class MatrixProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._limit_next: float | None = None
        self._syncs: dict[int, web.Request] = {}
        self.limited = 0  # how many sends were answered with a 429
        self.dropped = 0  # how many long polls were cut

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=1 << 24)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._http.close()

    def rate_limit_next_send(self, retry_after_s: float) -> None:
        self._limit_next = retry_after_s

    async def drop_syncs(self, wait_s: float = 10.0) -> int:
        """Cut the /sync long polls in flight, waiting (up to `wait_s`) for one if the bot is between two."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while not self._syncs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        cut = 0
        for request in list(self._syncs.values()):
            if request.transport is not None:
                request.transport.close()
                cut += 1
        self.dropped += cut
        return cut

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.path
        if self._limit_next is not None and request.method == "PUT" and "/send/" in path:
            retry_ms = int(self._limit_next * 1000)
            self._limit_next = None
            self.limited += 1
            body = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": retry_ms}
            return web.Response(status=429, text=json.dumps(body), content_type="application/json",
                                headers={"Retry-After": str(max(1, retry_ms // 1000))})
        is_sync = path.endswith("/sync")
        if is_sync:
            self._syncs[id(request)] = request
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            async with self._http.request(request.method, self.upstream + str(request.rel_url), headers=headers,
                                          data=await request.read()) as answer:
                data = await answer.read()
                out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS
                       and k.lower() != "content-encoding"}
                return web.Response(status=answer.status, body=data, headers=out)
        finally:
            self._syncs.pop(id(request), None)
