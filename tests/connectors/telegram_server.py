"""A fake Telegram Bot API server on loopback, speaking the documented protocol (https://core.telegram.org/bots/api).

What it implements, as the documentation says it:

- Making requests: "All queries to the Telegram Bot API must be served over HTTPS and need to be presented in this
  form: https://api.telegram.org/bot<token>/METHOD_NAME" ... "We support GET and POST HTTP methods. We support four
  ways of passing parameters in Bot API requests: URL query string, application/x-www-form-urlencoded,
  application/json (except for uploading files), multipart/form-data". "The response contains a JSON object, which
  always has a Boolean field 'ok' and may have an optional String field 'description' with a human-readable
  description of the result. If 'ok' equals True, the request was successful and the result of the query can be
  found in the 'result' field. In case of an unsuccessful request, 'ok' equals false and the error is explained in
  the 'description'. An Integer 'error_code' field is also returned ... Some errors may also have an optional field
  'parameters' of the type ResponseParameters": `retry_after` ("In case of exceeding flood control, the number of
  seconds left to wait before the request can be repeated") and `migrate_to_chat_id`. (Served over plain HTTP here.)
- getUpdates: "Use this method to receive incoming updates using long polling". `offset`: "Identifier of the first
  update to be returned. Must be greater by one than the highest among the identifiers of previously received
  updates. ... An update is considered confirmed as soon as getUpdates is called with an offset higher than its
  update_id. The negative offset can be specified to retrieve updates starting from -offset update from the end of
  the updates queue. All previous updates will be forgotten." `limit` 1-100, `timeout` "Timeout in seconds for long
  polling", `allowed_updates`. "This method will not work if an outgoing webhook is set up." A second getUpdates
  while one is waiting ends the first with 409 "Conflict: terminated by other getUpdates request; make sure that
  only one bot instance is running", as Telegram does; with a webhook set it is 409 "Conflict: can't use getUpdates
  method while webhook is active; use deleteWebhook to delete the webhook first".
- setWebhook: "Whenever there is an update for the bot, we will send an HTTPS POST request to the specified URL,
  containing a JSON-serialized Update. In case of an unsuccessful request (a request with response HTTP status code
  different from 2XY), we will repeat the request and give up after a reasonable amount of attempts." `secret_token`:
  "A secret token to be sent in a header 'X-Telegram-Bot-Api-Secret-Token' in every webhook request, 1-256
  characters. Only characters A-Z, a-z, 0-9, _ and - are allowed." deleteWebhook (`drop_pending_updates`),
  getWebhookInfo. (Plain HTTP on loopback is accepted here; Telegram requires HTTPS on ports 443, 80, 88 or 8443.)
- sendMessage: `chat_id`, `text` ("Text of the message to be sent, 1-4096 characters after entities parsing"),
  `parse_mode` HTML ("All <, > and & symbols that are not a part of a tag or an HTML entity must be replaced with
  the corresponding HTML entities (< with &lt;, > with &gt; and & with &amp;)"; supported tags b, strong, i, em, u,
  ins, s, strike, del, a, code, pre, blockquote, tg-spoiler, span class="tg-spoiler"; "The API currently supports
  only the following named HTML entities: &lt;, &gt;, &amp; and &quot;"), `reply_parameters`, `reply_markup` with
  an `inline_keyboard` of InlineKeyboardButton (`callback_data`: "Data to be sent in a callback query to the bot when
  the button is pressed, 1-64 bytes"; or `url`). editMessageText: without `reply_markup` the keyboard goes; the same
  content again is 400 "Bad Request: message is not modified: specified new message content and reply markup are
  exactly the same as a current content and reply markup of the message".
- answerCallbackQuery: "After the user presses a callback button, Telegram clients will display a progress bar until
  you call answerCallbackQuery"; `text` 0-200 characters.
- Update objects: `update_id`, `message` (message_id, from, chat {id, type}, date, text, entities with a
  `bot_command` at offset 0 for a command) or `callback_query` (id, from, message, chat_instance, data). A group's
  chat id is negative (-100... for supergroups); a private chat's id is the user's id.

Flood control: `rate_limit_next` answers the next sends with 429 "Too Many Requests: retry after N" and
`parameters.retry_after`. The test side drives people (`say`, `press`) and reads what they see (`chat_messages`:
each message's text after entity parsing, as clients show it, after edits).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import itertools
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

MAX_TEXT = 4096
MAX_CALLBACK_BYTES = 64
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote", "tg-spoiler",
         "span", "tg-emoji"}
_MARKUP = re.compile(r"<(/?)([a-z-]+)(\s[^<>]*)?>|&(#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[<>]")
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message")


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Posted:
    message_id: int
    chat_id: str
    text: str  # as people see it (entities parsed)
    markup: dict[str, Any] | None
    reply_to: int | None
    date: int
    edits: int = 0

    @property
    def buttons(self) -> list[dict[str, str]]:
        return [b for row in (self.markup or {}).get("inline_keyboard", []) for b in row]


@dataclass
class TelegramServer:
    token: str = "123456:TEST-token_abcdefghijklmnopqrstuvwx"
    username: str = "HeraldBot"
    pending: list[dict[str, Any]] = field(default_factory=list)  # updates not confirmed yet
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # every update ever queued, by update_id
    messages: dict[int, Posted] = field(default_factory=dict)
    answered: list[dict[str, Any]] = field(default_factory=list)  # answerCallbackQuery bodies, with "after_s"
    calls: list[str] = field(default_factory=list)
    sends: int = 0
    conflicts: int = 0  # 409s answered
    webhook_url: str = ""
    refuse_button_urls: bool = False  # a fault: every keyboard URL is refused (see _check_links)
    webhook_secret: str | None = None
    webhook_posts: list[tuple[int, int]] = field(default_factory=list)  # (update_id, the status Herald answered)
    port: int = 0
    _limited: list[int] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _update_ids: itertools.count = field(default_factory=lambda: itertools.count(700000001))
    _queries: dict[str, float] = field(default_factory=dict)  # callback query id -> when pressed
    _wake: asyncio.Condition = field(default_factory=asyncio.Condition)
    _polls: int = 0  # the generation of the newest getUpdates
    _down_until: float = 0.0
    _cut_next: bool = False
    _delivery: asyncio.Task[None] | None = None
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    # -- what people do, and what the tests arrange ---------------------------------------------------------------

    def say(self, user: int | str, chat: int | str, text: str, *, username: str = "") -> int:
        """`user` writes `text` in `chat` (their private chat when chat == user, else a supergroup)."""
        uid, cid = int(user), int(chat)
        message: dict[str, Any] = {
            "message_id": next(self._ids), "from": {"id": uid, "is_bot": False, "first_name": f"U{uid}"},
            "chat": ({"id": cid, "type": "private", "first_name": f"U{uid}"} if cid == uid
                     else {"id": cid, "type": "supergroup", "title": "Ops"}),
            "date": int(time.time()), "text": text}
        command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
        if command:
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command.group(0))}]
        return self._push({"message": message})

    def press(self, user: int | str, message_id: int, data: str) -> str:
        posted = self.messages[message_id]
        query_id = str(4_000_000_000 + next(self._ids))
        self._queries[query_id] = time.monotonic()
        self._push({"callback_query": {"id": query_id, "from": {"id": int(user), "is_bot": False,
                                                                 "first_name": f"U{user}"},
                                       "message": self._message_object(posted), "chat_instance": "42",
                                       "data": data}})
        return query_id

    def unconfirm(self, update_id: int) -> None:
        """Queue an update again, as Telegram still holds one whose confirmation (the next getUpdates with a higher
        offset) never came: what a bot that crashed after handling it, before asking for more, gets again."""
        self.pending.insert(0, self.history[update_id])
        asyncio.get_running_loop().create_task(self._notify())

    def rate_limit_next(self, retry_after_s: int, times: int = 1) -> None:
        self._limited.extend([retry_after_s] * times)

    def go_down(self, seconds: float) -> None:
        """Answer every call with 502 Bad Gateway for `seconds`, the long polls in flight too."""
        self._down_until = time.monotonic() + seconds
        asyncio.get_running_loop().create_task(self._notify())

    def cut_next_delivery(self) -> None:
        """The next webhook request is sent, but its answer is lost (the connection drops): it is sent again."""
        self._cut_next = True

    def chat_messages(self, chat: int | str) -> list[Posted]:
        return [m for m in self.messages.values() if m.chat_id == str(chat)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- serving ----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{bot}/{method}", self._request)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _request(self, request: web.Request) -> web.Response:
        if request.match_info["bot"] != f"bot{self.token}":
            return _envelope(ApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        self.calls.append(method)
        try:
            params = await _params(request)
            if time.monotonic() < self._down_until:
                raise ApiError(502, "Bad Gateway")
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            return web.json_response({"ok": True, "result": await handler(params)})
        except ApiError as exc:
            return _envelope(exc)

    async def _notify(self) -> None:
        async with self._wake:
            self._wake.notify_all()

    def _push(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self.history[update_id] = {"update_id": update_id, **update}
        self.pending.append(self.history[update_id])
        asyncio.get_running_loop().create_task(self._notify())
        return update_id

    # -- methods ----------------------------------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Herald",
                "username": self.username, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook_url:
            self.conflicts += 1
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                                "to delete the webhook first")
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset < 0:
            self.pending = self.pending[offset:]
        elif offset:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]  # confirmed ones are forgotten
        self._polls += 1
        mine = self._polls
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        await self._notify()  # an earlier poll still waiting is ended by this one
        async with self._wake:
            while not self.pending and time.monotonic() < deadline:
                if self._polls != mine or self.webhook_url:
                    self.conflicts += 1
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; make sure that only one "
                                        "bot instance is running")
                if time.monotonic() < self._down_until:
                    raise ApiError(502, "Bad Gateway")
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    pass
        allowed = params.get("allowed_updates") or []
        return [u for u in self.pending if not allowed or any(kind in u for kind in allowed)][:limit]

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        url, secret = str(params.get("url") or ""), params.get("secret_token")
        if secret is not None and not _SECRET.fullmatch(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url and not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self.pending.clear()
        self.webhook_url, self.webhook_secret = url, secret
        if url and (self._delivery is None or self._delivery.done()):
            self._delivery = asyncio.get_running_loop().create_task(self._deliver())
        await self._notify()  # a getUpdates waiting now conflicts with the webhook
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self.pending.clear()
        self.webhook_url, self.webhook_secret = "", None
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self.pending)}

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._flood_control()
        chat = str(params.get("chat_id") or "")
        if not re.fullmatch(r"-?[0-9]+", chat):
            raise ApiError(400, "Bad Request: chat not found")
        text = _visible(params)
        markup = self._check_links(_markup(params.get("reply_markup")))
        reply = (params.get("reply_parameters") or {}).get("message_id")
        posted = Posted(next(self._ids), chat, text, markup, reply, int(time.time()))
        self.messages[posted.message_id] = posted
        self.sends += 1
        return self._message_object(posted)

    def _check_links(self, markup: dict[str, Any] | None) -> dict[str, Any] | None:
        """The fault `refuse_button_urls` stands for: a keyboard URL Telegram's parser refuses for a reason of its
        own (the parser is undocumented), which the connector cannot have foreseen."""
        if self.refuse_button_urls and any("url" in b for row in (markup or {}).get("inline_keyboard", [])
                                           for b in row):
            raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return markup

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        self._flood_control()
        posted = self.messages.get(int(params.get("message_id") or 0))
        if posted is None or posted.chat_id != str(params.get("chat_id")):
            raise ApiError(400, "Bad Request: message to edit not found")
        text, markup = _visible(params), self._check_links(_markup(params.get("reply_markup")))
        if text == posted.text and markup == posted.markup:
            raise ApiError(400, NOT_MODIFIED)
        posted.text, posted.markup = text, markup
        posted.edits += 1
        return self._message_object(posted)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        pressed = self._queries.pop(str(params.get("callback_query_id")), None)
        if pressed is None:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        if len(str(params.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self.answered.append({**params, "after_s": time.monotonic() - pressed})
        return True

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _flood_control(self) -> None:
        if self._limited:
            retry_after = self._limited.pop(0)
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def _message_object(self, posted: Posted) -> dict[str, Any]:
        chat_id = int(posted.chat_id)
        message: dict[str, Any] = {
            "message_id": posted.message_id, "from": {"id": int(self.token.split(":")[0]), "is_bot": True,
                                                      "first_name": "Herald", "username": self.username},
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"}, "date": posted.date,
            "text": posted.text}
        if posted.edits:
            message["edit_date"] = int(time.time())
        if posted.markup:
            message["reply_markup"] = posted.markup
        return message

    async def _deliver(self) -> None:
        """Webhook mode: POST each pending update, in order, until the bot answers 2xx; retry after failures."""
        assert self._http is not None
        while self.webhook_url:
            if not self.pending:
                async with self._wake:
                    try:
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                continue
            update, url = self.pending[0], self.webhook_url
            headers = {SECRET_HEADER: self.webhook_secret} if self.webhook_secret else {}
            status = 0
            try:
                async with self._http.post(url, json=update, headers=headers) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if self._cut_next:  # the answer never arrived, whatever it was
                self._cut_next, status = False, 0
            self.webhook_posts.append((update["update_id"], status))
            if 200 <= status < 300:
                if self.pending and self.pending[0] is update:
                    self.pending.pop(0)
            else:
                await asyncio.sleep(0.2)


async def _params(request: web.Request) -> dict[str, Any]:
    """Parameters from the query string, a JSON body or a form (whose structured values are JSON-serialized)."""
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: JSON object expected")
            return {**params, **body}
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    for key in ("reply_markup", "allowed_updates", "reply_parameters", "link_preview_options"):
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return params


def _visible(params: dict[str, Any]) -> str:
    """The text as clients show it: with parse_mode HTML, tags checked and removed, entities decoded."""
    text = params.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError(400, "Bad Request: message text is empty")
    if params.get("parse_mode") == "HTML":
        text = _parse_html(text)
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _parse_html(source: str) -> str:
    out, open_tags, at = [], [], 0
    for match in _MARKUP.finditer(source):
        out.append(source[at:match.start()])
        at = match.end()
        closing, tag, entity = match.group(1), match.group(2), match.group(4)
        if entity is not None:
            if entity.startswith("#") or entity in ("lt", "gt", "amp", "quot"):
                out.append(html.unescape(f"&{entity};"))
            else:
                raise ApiError(400, f"Bad Request: can't parse entities: Unsupported HTML entity \"&{entity};\" "
                                    f"at byte offset {len(source[:match.start()].encode())}")
        elif tag is None or tag not in _TAGS:
            offset = len(source[:match.start()].encode())
            raise ApiError(400, f"Bad Request: can't parse entities: Unsupported start tag \"{tag or ''}\" at byte "
                                f"offset {offset}")
        elif closing:
            if not open_tags or open_tags.pop() != tag:
                raise ApiError(400, f"Bad Request: can't parse entities: Unexpected end tag \"{tag}\"")
        else:
            open_tags.append(tag)
    if open_tags:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
                            f"\"{open_tags[-1]}\"")
    out.append(source[at:])
    return "".join(out)


def _opens(url: str) -> bool:
    """Telegram's (undocumented) check of a keyboard URL, as seen: http(s) or tg://, and an http(s) host with a dot
    or an IP address; a bare host such as http://localhost:8080 is BUTTON_URL_INVALID
    (https://github.com/rubenlagus/TelegramBots/issues/302)."""
    if url.startswith("tg://"):
        return True
    if not url.startswith(("http://", "https://")):
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return "." in host


def _markup(markup: Any) -> dict[str, Any] | None:
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, "Bad Request: field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array")
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
            kinds = [k for k in ("callback_data", "url") if k in button]
            if len(kinds) != 1:
                raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
            if "callback_data" in button and not 1 <= len(str(button["callback_data"]).encode()) \
                    <= MAX_CALLBACK_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            if "url" in button and not _opens(str(button["url"])):
                raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
    return {"inline_keyboard": rows} if rows else None


def _envelope(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
    if error.parameters:
        body["parameters"] = error.parameters
    return web.json_response(body, status=error.code)
