"""Loopchat: a small chat platform served on loopback, for testing Herald's connector layer against real HTTP.

Its Bot API is modelled on Telegram's (https://core.telegram.org/bots/api), so that the test connector meets the same
problems a real one does:

- every method is `POST {base}/bot/{method}` with a JSON body, answered `{"ok": true, "result": ...}`, or on error
  `{"ok": false, "error_code": N, "description": "..."}` with that HTTP status;
- "429 Too Many Requests: retry after N" carries `"parameters": {"retry_after": N}` and a `Retry-After` header, as
  Telegram's flood control does;
- `getUpdates` is long polling: `offset` (the last `update_id` + 1 confirms everything before it), `timeout` seconds
  to wait for something new; updates are `{"update_id", "message": {...}}` or `{"update_id", "callback_query":
  {"id", "from", "message", "data"}}`;
- `sendMessage` {chat_id, text, reply_markup: {inline_keyboard: [[{text, callback_data}]]}, reply_to_message_id,
  idempotency_key}; `editMessageText` {chat_id, message_id, text, reply_markup}; `answerCallbackQuery`
  {callback_query_id, text}. `callback_data` is limited to 1-64 bytes, as on Telegram.

Unlike Telegram, `sendMessage` honours an `idempotency_key` (as Matrix does with transaction ids): a repeat of a key
returns the first message instead of posting a second one, and is counted in `repeats`.

The test side drives it directly (`inject_text`, `inject_press`, `rate_limit_next`, `go_down`) and reads what people
would see (`chat_messages`, `deliveries`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_CALLBACK_BYTES = 64


@dataclass
class Posted:
    message_id: int
    chat_id: str
    text: str
    buttons: list[dict[str, str]]
    key: str | None
    reply_to: str | None
    edits: int = 0


@dataclass
class LoopchatServer:
    updates: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[int, Posted] = field(default_factory=dict)
    deliveries: list[str] = field(default_factory=list)  # idempotency keys in the order they were first posted
    repeats: int = 0
    answered: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _by_key: dict[str, int] = field(default_factory=dict)
    _limited: list[float] = field(default_factory=list)
    _down_until: float = 0.0
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    # -- what the test does --------------------------------------------------------------------------------------

    def inject_text(self, user: str, chat: str, text: str) -> None:
        self._push({"message": {"message_id": next(self._ids), "from": {"id": user}, "chat": {"id": chat},
                                "text": text}})

    def inject_press(self, user: str, message_id: int, data: str) -> None:
        posted = self.messages[message_id]
        self._push({"callback_query": {"id": f"cq{next(self._ids)}", "from": {"id": user},
                                       "message": {"message_id": message_id, "chat": {"id": posted.chat_id}},
                                       "data": data}})

    def rate_limit_next(self, retry_after_s: float, times: int = 1) -> None:
        self._limited.extend([retry_after_s] * times)

    def go_down(self, seconds: float) -> None:
        """Answer every call with 502 Bad Gateway for `seconds`, the long polls in flight too."""
        self._down_until = time.monotonic() + seconds
        self._new_update.set()

    def chat_messages(self, chat: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.chat_id == chat]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- serving ---------------------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/bot/{method}", self._method)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _push(self, update: dict[str, Any]) -> None:
        self.updates.append({"update_id": next(self._update_ids), "date": int(time.time()), **update})
        self._new_update.set()

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        if time.monotonic() < self._down_until:
            return _error(502, "Bad Gateway")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Bad Request: body is not JSON")
        if method == "getUpdates":
            return await self._get_updates(body)
        if self._limited and method in ("sendMessage", "editMessageText"):
            retry_after = self._limited.pop(0)
            return web.json_response(
                {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry_after:g}",
                 "parameters": {"retry_after": retry_after}},
                status=429, headers={"Retry-After": f"{retry_after:g}"})
        handler = {"sendMessage": self._send, "editMessageText": self._edit,
                   "answerCallbackQuery": self._answer}.get(method)
        if handler is None:
            return _error(404, "Not Found: method not found")
        return handler(body)

    async def _get_updates(self, body: dict[str, Any]) -> web.Response:
        offset = int(body.get("offset") or 0)
        self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed ones are forgotten
        if not self.updates:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), float(body.get("timeout") or 0))
            except TimeoutError:
                pass
            if time.monotonic() < self._down_until:
                return _error(502, "Bad Gateway")
        return web.json_response({"ok": True, "result": self.updates[:100]})

    def _send(self, body: dict[str, Any]) -> web.Response:
        chat, text = str(body.get("chat_id") or ""), body.get("text")
        if not chat or not isinstance(text, str) or not text:
            return _error(400, "Bad Request: chat_id and text are required")
        if chat.startswith("missing"):
            return _error(400, "Bad Request: chat not found")
        buttons = _buttons(body)
        if isinstance(buttons, web.Response):
            return buttons
        key = body.get("idempotency_key")
        if key is not None and key in self._by_key:
            self.repeats += 1
            return _ok({"message_id": self._by_key[key], "chat": {"id": chat}})
        posted = Posted(next(self._ids), chat, text, buttons, key, body.get("reply_to_message_id"))
        self.messages[posted.message_id] = posted
        if key is not None:
            self._by_key[key] = posted.message_id
            self.deliveries.append(key)
        return _ok({"message_id": posted.message_id, "chat": {"id": chat}})

    def _edit(self, body: dict[str, Any]) -> web.Response:
        posted = self.messages.get(int(body.get("message_id") or 0))
        if posted is None or posted.chat_id != str(body.get("chat_id")):
            return _error(400, "Bad Request: message to edit not found")
        buttons = _buttons(body)
        if isinstance(buttons, web.Response):
            return buttons
        posted.text, posted.buttons = str(body.get("text") or posted.text), buttons
        posted.edits += 1
        return _ok({"message_id": posted.message_id, "chat": {"id": posted.chat_id}})

    def _answer(self, body: dict[str, Any]) -> web.Response:
        self.answered.append(body)
        return _ok(True)


def _buttons(body: dict[str, Any]) -> list[dict[str, str]] | web.Response:
    rows = (body.get("reply_markup") or {}).get("inline_keyboard") or []
    buttons = [button for row in rows for button in row]
    for button in buttons:
        if not 1 <= len(str(button.get("callback_data", "")).encode()) <= MAX_CALLBACK_BYTES:
            return _error(400, "Bad Request: BUTTON_DATA_INVALID")
    return buttons


def _ok(result: object) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)
