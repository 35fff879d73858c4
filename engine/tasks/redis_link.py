"""Herald's connection to Redis: credentials, TLS, the refusal of a Redis anyone may use, and riding out outages.

Errors are sorted by `classify`:

    outage    Redis cannot be reached now (refused, reset, timed out, loading its data): retried with backoff
    refused   Redis answers, but not as configured (credentials refused, its TLS certificate not trusted, a command
              the ACL user may not run, no password needed): `Link.start` raises it as a QueueError, so the engine
              and `herald worker` do not start; later it is reported like an outage, with its reason, and retried
              (someone may be fixing it)
    None      anything else is a bug, and is raised

A `Link` is one process's client and what it knows of Redis: an outage is logged once when it begins and once when
it ends, however many loops retry meanwhile, and its state is what the engine reports (/healthz, /metrics, the note
to a user whose task waits).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.core.config import QueueConfig
from engine.core.errors import QueueError
from engine.tasks.signing import read_private_file

log = logging.getLogger("herald.redis")
T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # longer than any blocking read Herald makes (BLOCK_MS)
BLOCK_MS = 1000
FIRST_RETRY_S = 0.1
Kind = Literal["outage", "refused"]
_BUSY_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY ")


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an abandoned call's error is expected, not news


async def abandonable(call: Awaitable[T]) -> T:
    """Await a redis-py call in a task of its own, so that cancelling the caller always takes effect, at once.
    redis-py can hold on to a cancelled blocking read (XREADGROUP ... BLOCK) until its connection closes, and 8.x
    can swallow a cancellation that lands inside a command (the worker's loop then never stopped); the call is
    left to end with the client instead."""
    inner = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.cancel()
        inner.add_done_callback(_quiet)
        raise


def where(config: QueueConfig) -> str:
    """The Redis URL without its credentials, for messages."""
    assert config.redis_url is not None
    parts = urlsplit(config.redis_url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path or ''}"


def _password(config: QueueConfig) -> str | None:
    if config.redis_password_env:
        value = os.environ.get(config.redis_password_env)
        if not value:
            raise QueueError(f"the environment variable {config.redis_password_env} ([queue] redis_password_env) "
                             "is not set")
        return value
    if config.redis_password_file is not None:
        return read_private_file(config.redis_password_file, "[queue] redis_password_file")
    return None


def client_for(config: QueueConfig, *, anonymous: bool = False) -> aredis.Redis:
    """A client for the configured Redis: its user and password (from the URL, else redis_username and
    redis_password_env / _file), TLS 1.2+ for rediss:// verified against tls_ca_file, no retries of its own (the
    caller's loop retries, so an outage is seen and reported). `anonymous`: the same server with no credentials."""
    assert config.redis_url is not None
    options: dict[str, Any] = dict(parse_url(config.redis_url))
    connection_class = options.pop("connection_class", None)
    url_user, url_password = options.pop("username", None), options.pop("password", None)
    if not anonymous:
        username = url_user or config.redis_username
        password = url_password or _password(config)
        if username:
            options["username"] = username
        if password:
            options["password"] = password
    if connection_class is SSLConnection:
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True, ssl_min_version=ssl.TLSVersion.TLSv1_2)
        if config.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(config.tls_ca_file)
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            options.update(ssl_certfile=str(config.tls_cert_file), ssl_keyfile=str(config.tls_key_file))
    if connection_class is not None:
        options["connection_class"] = connection_class
    pool = ConnectionPool(
        **options,
        decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=READ_TIMEOUT_S,
        socket_keepalive=True, retry=Retry(NoBackoff(), 0))
    return aredis.Redis.from_pool(pool)


def _tls_rejected(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: BaseException) -> Kind | None:
    """How a failed Redis call is handled (see the module docstring)."""
    if isinstance(exc, QueueError | AuthenticationError | AuthorizationError | NoPermissionError):
        return "refused"
    if isinstance(exc, RedisConnectionError):
        return "refused" if _tls_rejected(exc) else "outage"
    if isinstance(exc, RedisTimeoutError | TimeoutError | OSError):
        return "outage"
    if isinstance(exc, ResponseError) and str(exc).startswith(_BUSY_REPLIES):
        return "outage"
    return None


def backoff(*, cap_s: float, first_s: float = FIRST_RETRY_S, rng: Callable[[], float] = random.random
            ) -> Iterator[float]:
    """Waits between attempts: doubling from `first_s` up to `cap_s`, each between half and all of that (jitter,
    so workers that lost Redis together do not come back in step)."""
    ceiling = first_s
    while True:
        yield ceiling / 2 + rng() * ceiling / 2
        ceiling = min(cap_s, ceiling * 2)


async def check_access(config: QueueConfig, client: aredis.Redis) -> None:
    """Refuse (QueueError) a Redis whose task stream anyone may use without a password, unless the config allows
    it; then check that Redis takes Herald's own credentials. A Redis that cannot be reached raises its error."""
    if not config.allow_unauthenticated:
        anonymous = client_for(config, anonymous=True)
        try:
            await anonymous.xlen(config.tasks_stream)
        except (AuthenticationError, NoPermissionError):
            pass  # as it should be: Redis wants credentials for this
        else:
            raise QueueError(
                f"Redis at {where(config)} lets clients in without a password; set requirepass or an ACL user "
                "there (and the password here), or set [queue] allow_unauthenticated = true to accept that")
        finally:
            await anonymous.aclose()
    try:
        await client.ping()
        await client.xlen(config.tasks_stream)
    except (AuthenticationError, AuthorizationError) as exc:
        raise QueueError(f"Redis at {where(config)} refused Herald's credentials: {exc}") from None
    except NoPermissionError as exc:
        raise QueueError(f"Redis at {where(config)} does not let Herald's user use {config.tasks_stream}: "
                         f"{exc}") from None
    except ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        raise QueueError(f"{config.tasks_stream} in Redis at {where(config)} is not a stream; set [queue] "
                         "tasks_stream to another name, or delete that key") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, QueueError):
        return str(exc)
    text = str(exc).strip() or type(exc).__name__
    if _tls_rejected(exc):
        return f"its TLS certificate is not trusted ({text}); set [queue] tls_ca_file to the CA that signed it"
    return text


class Link:
    """A process's Redis client, and whether Redis can be used right now."""

    def __init__(self, config: QueueConfig, *, on_change: Callable[[str | None], None] | None = None) -> None:
        self.config = config
        self.where = where(config)
        self.client = client_for(config)
        self.problem: str | None = None  # why Redis cannot be used now; None while it works
        self.outages = 0  # outages begun so far: a caller compares it to see whether one happened meanwhile
        self.up_since = time.monotonic()  # when Redis last became usable
        self._kind: Kind | None = None
        self._down_since = 0.0
        self._checked = False
        self._on_change = on_change

    async def start(self) -> None:
        """First contact: raise QueueError if Redis refuses Herald or lets anyone in. If it cannot be reached, the
        outage is reported and the loops (`call`) wait for it."""
        try:
            await abandonable(self._check())
        except Exception as exc:
            kind = classify(exc)
            if kind == "refused":
                raise QueueError(_reason(exc)) from None
            if kind is None:
                raise
            self.failed(exc)

    async def _check(self) -> None:
        await check_access(self.config, self.client)
        self._checked = True

    async def call(self, op: Callable[[], Awaitable[T]], *, cap_s: float | None = None,
                   repair: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run `op` until it works, through outages (waiting with backoff between attempts). `repair` runs when
        Redis answers NOGROUP or UNBLOCKED (it lost the streams: a restart without persistence, or someone deleted
        them) before `op` is tried again."""
        delays = backoff(cap_s=min(cap_s or self.config.reconnect_max_s, self.config.reconnect_max_s))
        while True:
            try:
                if not self._checked:  # the first contact after an outage: is it still the Redis we trust?
                    await abandonable(self._check())
                result = await abandonable(op())
            except ResponseError as exc:
                if repair is None or not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    if classify(exc) is None:
                        raise
                    self.failed(exc)
                    await asyncio.sleep(next(delays))
                    continue
                log.warning("Redis at %s lost Herald's streams or consumer groups (restarted without its data, or "
                            "deleted); making them again", self.where)
                await self.call(repair)
                continue
            except Exception as exc:
                if classify(exc) is None:
                    raise
                self.failed(exc)
                await asyncio.sleep(next(delays))
                continue
            self.worked()
            return result

    def failed(self, exc: BaseException) -> None:
        """Note a failed call; the first of an outage (or a change of its kind) is logged."""
        kind = classify(exc) or "outage"
        problem = (f"Redis at {self.where} is unreachable: {_reason(exc)}" if kind == "outage"
                   else f"Redis at {self.where} refused Herald: {_reason(exc)}")
        if self.problem is None:
            self.outages += 1
            self._down_since = time.monotonic()
            self._checked = False
        if kind != self._kind:
            log.log(logging.WARNING if kind == "outage" else logging.ERROR,
                    "task queue unavailable: %s; retrying in the background", problem)
        else:
            log.debug("task queue still unavailable: %s", problem)
        self._kind = kind
        if problem != self.problem:
            self.problem = problem
            if self._on_change is not None:
                self._on_change(problem)

    def worked(self) -> None:
        if self.problem is None:
            return
        log.warning("task queue back: Redis at %s answers again after %.1f s", self.where,
                    time.monotonic() - self._down_since)
        self.problem, self._kind = None, None
        self.up_since = time.monotonic()
        if self._on_change is not None:
            self._on_change(None)

    async def close(self) -> None:
        await self.client.aclose()
