"""Herald's own HTTP surface: `/healthz`, `/metrics` (Prometheus text format, engine.metrics; like `/healthz` it
needs no token: counts only, nothing about who or what) and the `/api/v1/stream` WebSocket (live updates and commands).

The stream is authenticated with an API token: a JWT for purpose "api" (`herald token issue`), or the engine's local
token in `<data>/api-token` (mode 0600). `POST /api/v1/reload` (same tokens; the local token or a person with the
admin role) reloads rules and config now and answers with the outcome: 200 with the diff, or 422 with every
diagnostic (engine.reload). It sends a snapshot, then every update; a client may send commands and press the
buttons of alerts (`{"type": "press", "button": "<the button's id from an alert update>"}`), which act as the
token's subject (the local token may name another principal with `as`) exactly as a chat user's would, and whose
progress and result come back as `reply` frames on the same socket. The token is checked again while the stream is
open: revoked or expired, the stream is closed with the reason (code 1008); a stopping engine closes every stream
(code 1001) so clients see it at once. `GET /api/v1/events/{id}` (an event's trace, engine.runs.trace) and
`GET /api/v1/tasks/{id}` (a task's whole output) take the same tokens: what the TUI's Enter shows (docs/tui.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from engine.client.snapshots import (
    AlertView,
    AuditView,
    EventView,
    ReloadView,
    RulesView,
    RunView,
    TaskDetail,
    TaskView,
)
from engine.core.bus import Subscription
from engine.core.errors import AuthError
from engine.core.events import Actor, ReplyTo
from engine.core.ids import new_id
from engine.core.journal import Journal
from engine.delivery.connector import AddressError
from engine.delivery.message import Capabilities, Conversation, Message, MessageRef
from engine.intake.decoding import UnreadableInput, ascii_header, load_json
from engine.intake.intake import Incoming, Intake, Outcome
from engine.runs import herald_silences, trace
from engine.runs.alert_history import alert_history
from engine.runs.alerts import AlertState
from engine.security import keys
from engine.security.audit import AuditLog
from engine.security.identity import Directory
from engine.server.metrics import CONTENT_TYPE, Observed
from engine.server.metrics import render as render_metrics
from engine.server.token_watch import bearer, watch_token

log = logging.getLogger("herald.api")

API_PURPOSE = "api"
_UPDATE_TYPES: dict[type, str] = {EventView: "event", RunView: "run", TaskView: "task", AuditView: "audit",
                                  RulesView: "rules",
                 AlertView: "alert"}
_FRAME_HELP = 'expected {"type": "command", "text": "/..."} or {"type": "press", "button": "<button id>"}'
RELOAD_ROLE = "admin"


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


class StreamConnector:
    """Answers commands and presses sent over `/api/v1/stream` (the TUI's command line), as a connector.

    A conversation is the API token (`token:<jti>`), not a socket: every stream opened with the token that asked
    gets the answers, so a TUI that reconnects still sees the result. Replies go out as `reply` frames, which the
    client matches by `id`; notifications are not sent here (observers see them as events)."""

    platform = "api"
    capabilities = Capabilities(buttons=True, edits=True, formatting="plain", max_text=1 << 16, edit_interval_s=0,
                                notifications=False, dedupes=True)  # the TUI matches replies by id

    def __init__(self) -> None:
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}

    def parse_address(self, text: str) -> str:
        raise AddressError("the API stream is not a notification target")

    async def send(self, to: Conversation, message: Message, *, key: str, seq: int) -> MessageRef:
        # Progress is followed by more; a result or a plain answer ends the exchange for this rule.
        frame = {"type": "reply", "id": message.in_reply_to, "text": message.text,
                 "final": message.kind not in ("progress", "output")}
        sent = 0
        for ws in list(self.sockets.get(to.chat, ())):
            if not ws.closed:
                try:
                    await ws.send_json(frame)
                    sent += 1
                except (ConnectionError, RuntimeError):
                    pass
        return MessageRef(platform=self.platform, chat=to.chat, id=str(seq), recipients=sent)

    async def edit(self, ref: MessageRef, message: Message, *, key: str, seq: int) -> MessageRef:
        return await self.send(Conversation(platform=self.platform, chat=ref.chat), message, key=key, seq=seq)


class ApiHost(Observed, Protocol):
    """What the HTTP API needs of the engine."""

    @property
    def directory(self) -> Directory: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def alerts(self) -> AlertState: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def journal(self) -> Journal: ...

    async def reload(self, *, trigger: str = "api", actor: str = "system") -> ReloadView: ...


def add_routes(app: web.Application, engine: ApiHost, outlet: StreamConnector) -> None:
    stopping = asyncio.Event()
    async def healthz(request: web.Request) -> web.Response:
        if engine.db.trouble is not None:  # a full or failing data disk: new events are refused until it recovers
            return web.json_response({"status": "storage unavailable", "reason": f"the data disk cannot take writes: "
                                      f"{engine.db.trouble}"}, status=503)
        if engine.state != "running":
            return web.json_response({"status": engine.state}, status=503)
        if engine.tasks.outage is not None:  # Redis unreachable: commands are taken, their tasks wait
            return web.json_response({"status": "queue unavailable", "rules": len(engine.graph.rules)}, status=503)
        return web.json_response({"status": "running", "rules": len(engine.graph.rules)})

    async def authenticate(request: web.Request) -> dict[str, Any] | web.Response:
        try:  # raw non-ASCII bytes would fail the first .encode() below: a 400, not a 500
            supplied = (ascii_header(request.headers, "Authorization") or "").removeprefix("Bearer ").strip()
        except UnreadableInput as exc:
            return json_error(400, str(exc))
        if not supplied:
            return json_error(401, "missing API token (Authorization: Bearer ...; see herald token issue)")
        try:
            claims: dict[str, Any] = await engine.db.call(keys.verify, supplied, purpose=API_PURPOSE)
        except AuthError as exc:
            return json_error(401, f"API token refused: {exc}")
        return claims

    async def reload(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        if not claims.get("local") and RELOAD_ROLE not in engine.directory.roles_of(str(claims["sub"])):
            return json_error(403, f"reloading needs the engine's local token or the {RELOAD_ROLE} role")
        if engine.state != "running":
            return json_error(503, f"engine is {engine.state}")
        outcome = await engine.reload(trigger="api", actor=str(claims["sub"]))
        return web.json_response(outcome.model_dump(mode="json"), status=422 if outcome.status == "rejected" else 200)

    async def stream(request: web.Request) -> web.StreamResponse:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        if stopping.is_set():  # opened while the engine stops: `going_away` has already closed the others
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the engine is stopping")
            return ws
        sub, unsubscribe = engine.bus.subscribe()
        conversation = f"token:{claims['jti']}"
        outlet.sockets.setdefault(conversation, set()).add(ws)
        sender = asyncio.ensure_future(_pump(ws, engine, sub))
        # revocation and expiry close the stream with the reason (engine/server/token_watch.py)
        watcher = asyncio.ensure_future(watch_token(ws, engine.db, bearer(request), purpose=API_PURPOSE))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await _inbound(ws, engine, conversation, claims, msg.data)
        finally:
            unsubscribe()
            sockets = outlet.sockets.get(conversation, set())
            sockets.discard(ws)
            if not sockets:
                outlet.sockets.pop(conversation, None)
            sender.cancel()
            watcher.cancel()
            await asyncio.gather(sender, watcher, return_exceptions=True)
        return ws

    async def alert(request: web.Request) -> web.Response:
        """One alert: who acknowledged and muted it, and its history (engine.runs.alert_history; any valid API
        token)."""
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        fingerprint = request.match_info["fingerprint"]
        history = await alert_history(engine.journal, engine.audit, fingerprint)
        if not history:
            return json_error(404, f"no alert {fingerprint!r} (give its whole fingerprint)")
        status = await engine.alerts.status(fingerprint)
        return web.json_response({"fingerprint": fingerprint, **status.as_json(), "history": history})

    async def silences(request: web.Request) -> web.Response:
        """Herald's active silences by labels (`silence alert where ...`): matchers, who, until (any API token)."""
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        found = await engine.db.call(herald_silences.active)
        return web.json_response({"silences": [s.as_json() for s in found]})

    async def event_detail(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        event_id, graph = request.match_info["id"], engine.graph
        found = await engine.db.call(lambda conn: trace.event_trace(conn, event_id, graph))
        if found is None:
            return json_error(404, f"no event {event_id!r} in the journal")
        return web.json_response(found.model_dump(mode="json"))

    async def task_detail(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        task = await engine.tasks.get(request.match_info["id"])
        if task is None:
            return json_error(404, f"no task {request.match_info['id']!r}")
        detail = TaskDetail(task=task.view(), output=task.output, error=task.error or "", earlier=task.earlier)
        return web.json_response(detail.model_dump(mode="json"))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=await render_metrics(engine), headers={"Content-Type": CONTENT_TYPE})

    async def going_away(app: web.Application) -> None:
        stopping.set()
        # Without this a stopping engine keeps every open stream up (answering pings) while aiohttp waits for the
        # handlers to end: clients would go on saying "connected" to an engine that is gone.
        for ws in [ws for sockets in outlet.sockets.values() for ws in sockets]:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the engine is stopping")

    app.on_shutdown.append(going_away)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_post("/api/v1/reload", reload)
    app.router.add_get("/api/v1/alerts/{fingerprint}", alert)
    app.router.add_get("/api/v1/silences", silences)
    app.router.add_get("/api/v1/events/{id}", event_detail)  # what the TUI's Enter shows
    app.router.add_get("/api/v1/tasks/{id}", task_detail)


async def _pump(ws: web.WebSocketResponse, engine: ApiHost, sub: Subscription) -> None:
    await ws.send_json({"type": "snapshot", "snapshot": engine.bus.snapshot().model_dump(mode="json")})
    while not ws.closed:
        update = await sub.queue.get()
        if sub.overflowed or update is None:
            await ws.close(code=1013, message=b"too slow: reconnect for a fresh snapshot")
            return
        await ws.send_json({"type": _UPDATE_TYPES[type(update)], "item": update.model_dump(mode="json")})


async def _inbound(
    ws: web.WebSocketResponse, engine: ApiHost, conversation: str, claims: dict[str, Any], raw: str
) -> None:
    try:
        frame = load_json(raw)  # too deep or a lone surrogate: an error frame, like any bad JSON
        kind = frame.get("type") if isinstance(frame, dict) else None
        if not ((kind == "command" and isinstance(frame.get("text"), str))
                or (kind == "press" and isinstance(frame.get("button"), str))):
            raise ValueError(_FRAME_HELP)
    except ValueError as exc:
        await ws.send_json({"type": "error", "message": str(exc)})
        return
    client_id = str(frame.get("id") or new_id())
    # Only the engine's own local token (readable by whoever runs Herald) may act for someone else.
    principal = frame.get("as") if claims.get("local") and frame.get("as") else claims["sub"]
    if not engine.directory.exists(str(principal)):
        hint = (" The engine's local token acts as the config's api_principal: set it to a person in herald.toml"
                if claims.get("local") and not frame.get("as") else "")
        await ws.send_json({"type": "reply", "id": client_id, "text": f"Unknown principal {principal!r}.{hint}",
                            "final": True})
        return
    actor = Actor(platform="api", account=f"token:{claims['jti']}", principal=principal)
    reply_to = ReplyTo(platform="api", chat=conversation, message_id=client_id)
    item = Incoming(actor, reply_to, text=frame["text"]) if kind == "command" else \
        Incoming(actor, reply_to, button=frame["button"])

    async def refused(outcome: Outcome) -> None:
        prefix = {"busy": "Busy, try again", "bad_request": "Refused", "button_refused": "Refused"}
        text = outcome.text if outcome.code == "not_command" else f"{prefix.get(outcome.code or '', 'Refused')}: " \
            f"{outcome.text.removeprefix('button refused: ')}."
        await ws.send_json({"type": "reply", "id": client_id, "text": text, "final": True})

    await engine.intake.take([item], refused=refused, commands_only=True)
