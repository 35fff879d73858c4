"""The engine: owns the database, the runtime, the workers, the web server and the integrations.

Lifecycle: starting -> running -> stopping -> stopped. Every background task is created through `_spawn` and kept
in a registry that `stop()` cancels and awaits; nothing is fire-and-forget. Hot reload (engine.reload) watches the
rules folder and the config file; `reload()` and `request_reload()` trigger the same transaction by hand.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import sqlite3
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from dsl import EventGraph
from dsl.ast import TeamDecl
from engine.client.snapshots import ReloadView
from engine.core import journal, timers
from engine.core.bus import Bus
from engine.core.config import Config, HttpConfig
from engine.core.errors import AuthError, Busy, ConfigError, DurabilityError
from engine.core.events import Actor, AlertData, ButtonData, Event, ReplyTo
from engine.core.ids import new_id
from engine.core.journal import Journal
from engine.core.private import require_private_folder
from engine.core.severity import normalise
from engine.core.store import Database
from engine.delivery import outbox, storm
from engine.delivery.connector import Connector
from engine.delivery.delivery import Delivery
from engine.delivery.message import Conversation
from engine.delivery.outbox import Outbox, Outgoing
from engine.delivery.outlets import Audience, Notification
from engine.delivery.progress import OutputRelay
from engine.intake.intake import Intake
from engine.intake.secrets import SecretIntake
from engine.plugin import kv
from engine.plugin.api import Acknowledge, ConnectorSpec, Integration, KeyValue, Unload
from engine.plugin.commands import CommandCatalog, CommandInfo, CommandsChanged
from engine.plugin.discovery import active_integrations, connector_specs, discover, validate_integrations
from engine.plugin.kv import SqliteKeyValue
from engine.reload.reloader import ConfigSource, Fallback, Reloader, adopt_config
from engine.runs import (
    actions,
    alerts,
    confirm,
    escalation,
    heartbeats,
    herald_silences,
    runtime,
    schedules,
    stateful,
    upstream_silences,
)
from engine.runs.alert_board import AlertBoard
from engine.runs.alerts import TOGGLES, AlertState
from engine.runs.builtins import press_refusal
from engine.runs.run import Services
from engine.runs.runtime import Runtime
from engine.runs.silence_sync import SilenceSync
from engine.runs.upstream_silences import UpstreamSilences
from engine.sandbox.runner import Sandbox
from engine.security import audit, identity, keys
from engine.security.audit import AuditLog
from engine.security.identity import Directory
from engine.server import full_disk, restore, retention
from engine.server.api import API_PURPOSE, StreamConnector, add_routes
from engine.server.dispatch import Dispatcher
from engine.server.local_token import LocalToken
from engine.server.metrics import Metrics
from engine.tasks import queue as tasks
from engine.tasks.queue import FINAL, TaskQueue, TaskWorkers

if TYPE_CHECKING:
    from engine.tasks.redis_queue import RemoteTasks

log = logging.getLogger("herald.engine")

State = Literal["new", "starting", "running", "stopping", "stopped"]
RECENT_ON_START = 200
HOUSEKEEPING_EVERY_S = 3600.0
STOP_GRACE_S = 10.0  # how long stopping waits for background tasks to end after cancelling them


SCHEMAS: list[str | Callable[[sqlite3.Connection], None]] = [
    journal.SCHEMA, journal.migrate, audit.SCHEMA, tasks.SCHEMA, tasks.migrate, runtime.SCHEMA, alerts.SCHEMA,
    alerts.migrate, keys.SCHEMA, actions.EFFECTS_SCHEMA, identity.SCHEMA, timers.SCHEMA, stateful.SCHEMA,
    confirm.SCHEMA, outbox.SCHEMA, outbox.migrate, kv.SCHEMA, kv.migrate, upstream_silences.SCHEMA,
    heartbeats.SCHEMA, storm.SCHEMA, herald_silences.SCHEMA]


def declared_audiences(teams: Sequence[TeamDecl], connectors: Mapping[str, ConnectorSpec]) -> dict[str, Audience]:
    """Teams declared in rule files as audiences: `@person` members, and `platform "address"` conversations in the
    canonical form their connector gives (the compiler has checked them)."""
    audiences = {}
    for team in teams:
        members = tuple(m.address for m in team.members if m.platform is None)
        targets = tuple(Conversation(platform=m.platform, chat=connectors[m.platform].parse_address(m.address))
                        for m in team.members if m.platform is not None and m.platform in connectors)
        audiences[team.name] = Audience(team.name, members, targets)
    return audiences


def tls_context(http: HttpConfig) -> ssl.SSLContext | None:
    """TLS 1.2 or newer with the configured certificate, or None for plain HTTP."""
    if http.tls_cert is None or http.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(http.tls_cert, http.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use TLS certificate {http.tls_cert} / key {http.tls_key}: {exc}") from None
    return context


class Engine:
    def __init__(self, config: Config, graph: EventGraph, *, teams: Sequence[TeamDecl] = (),
                 integrations: Sequence[Integration] | None = None, config_source: ConfigSource | None = None,
                 watch: bool = True, clock: timers.Clock | None = None, fallback: Fallback | None = None):
        """`config_source` lets a reload re-read the config file (without it only rules reload); `watch` turns
        the file watcher on (reload() and request_reload() work either way)."""
        self.config = config
        self._fallback = fallback  # started on the last rules that compiled: reported loudly at start
        self.state: State = "new"
        self.bus = Bus()
        self.db = Database(config.data_dir, min_free_bytes=config.min_free_disk_mb << 20)
        self.directory = Directory(config, self.db)
        self.outbox = Outbox(self.db)
        clock = clock or timers.SystemClock()
        storms = storm.Storms(self.db, now=lambda: clock.now().timestamp(),
                              policy=lambda: (self.config.alerts.storm_threshold, self.config.alerts.storm_window_s))
        self.delivery = Delivery(self.outbox, accounts=self.directory.accounts_of, audit=self._audit_soon,
                                 storms=storms)
        self._local_token = LocalToken(config, self.db, self.directory, purpose=API_PURPOSE,
                                       audit=self.audit_publish)
        self.port: int | None = None
        self.installed = list(integrations) if integrations is not None else discover()
        self.integrations = active_integrations(config, self.installed)  # installed and turned on by the config
        self.connectors: Mapping[str, ConnectorSpec] = connector_specs(self.integrations)
        self._integration_configs = validate_integrations(config, self.installed)
        self._http: aiohttp.ClientSession | None = None
        self._unloads: list[Unload] = []
        self._background: set[asyncio.Task[None]] = set()
        self._until_running: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self.metrics = Metrics()
        self._app = web.Application(client_max_size=config.http.max_body_bytes)
        self._runner: web.AppRunner | None = None
        self._redis: RemoteTasks | None = None
        self.journal = Journal(self.db, SecretIntake(self.directory))  # /link is redeemed as it is journaled
        self.audit = AuditLog(self.db, self.bus)
        self.alerts = AlertState(self.db)
        self.tasks = TaskQueue(self.db, on_change=lambda task: self.bus.publish(task.view()))
        owner = "engine-" + hashlib.sha256(str(config.data_dir).encode()).hexdigest()[:12]  # one per data folder
        self.sandbox = Sandbox(config=config.sandbox, scripts_dir=config.scripts_folder, owner=owner)
        board = AlertBoard(self.bus)
        upstream = UpstreamSilences(self.db, self._alertmanager_url, lambda: self.http, self.audit_publish)
        services = Services(config=config, directory=self.directory, db=self.db, audit=self.audit, tasks=self.tasks,
                            alerts=self.alerts, delivery=self.delivery, bus=self.bus,
                            submit=self._submit_internal, board=board, cancel_task=self.cancel_task,
                            upstream=upstream)
        self.silence_sync = SilenceSync(db=self.db, upstream=upstream, alerts=self.alerts, board=board,
                                        follow=self.delivery.follow, audit=self.audit_publish,
                                        url=self._alertmanager_url,
                                        every_s=lambda: self.config.alerts.alertmanager_sync_s,
                                        end=lambda silence, reason: herald_silences.end(
                                            self.runtime.services, silence, reason=reason))
        self.runtime = Runtime(graph=graph, services=services, journal=self.journal,
                               declared_teams=declared_audiences(teams, self.connectors))
        # Accepted events wait in lanes (engine/server/dispatch.py). Unbounded as data structures, bounded by
        # admission: outside senders are refused (503 / "busy") once `max_queued_events` wait, while events raised
        # inside (emit, task results, timers) always get in, so a dispatcher can never block on its own lane.
        self.dispatcher = Dispatcher(self.db, lambda event: self.runtime.handle(event),
                                     on_stalled=self.metrics.count_stalled)
        self.intake = Intake(submit=self.submit, press=self.press, choices=self._choices,
                             resolve=self.directory.resolve)
        self.output_relay = OutputRelay(self.delivery, self.bus)
        self._workers = TaskWorkers(queue=self.tasks, sandbox=self.sandbox, on_output=self.output_relay.line,
                                    on_finished=self.output_relay.reporting_after(self.runtime.task_finished))
        self.reloader = Reloader(self, config_source=config_source)
        self._commands = CommandCatalog(graph)  # what integrations with native commands register
        self.timers = timers.Timers(self.db, clock=clock)  # `clock`: tests move time instead of sleeping
        self.stateful = stateful.Stateful(runtime=self.runtime, timers=self.timers,
                                          parts=(confirm.PART, schedules.PART, escalation.PART,
                                                 heartbeats.PART, herald_silences.PART))
        self._detach_stateful: Callable[[], None] | None = None
        self._watch = watch

    @property
    def graph(self) -> EventGraph:
        """The rules new events are matched against (hot reload swaps it)."""
        return self.runtime.graph

    # -- IntegrationContext ------------------------------------------------------------------------------------

    @property
    def routes(self) -> web.UrlDispatcher:
        return self._app.router

    async def submit(self, events: Sequence[Event], *, acknowledge: Acknowledge | None = None) -> None:
        if self.db.trouble is not None:  # not one more "accepted" that could not be kept
            self.metrics.refused += len(events)
            raise Busy(f"the data disk cannot take writes ({self.db.trouble})", retry_after_s=full_disk.RETRY_AFTER_S)
        if self.state != "running":
            self.metrics.refused += len(events)
            raise Busy(f"engine is {self.state}, not accepting events")
        if self.dispatcher.waiting + len(events) > self.config.max_queued_events:
            self.metrics.refused += len(events)
            raise Busy(f"{self.dispatcher.waiting} events are waiting to be handled")
        try:
            await self._accept([self._on_scale(event) for event in events], acknowledge)
        except DurabilityError as exc:  # journaling them failed: the sender keeps them and sends them again
            self.metrics.refused += len(events)
            raise Busy(f"the data disk cannot take writes ({self.db.trouble or exc})",
                       retry_after_s=full_disk.RETRY_AFTER_S) from exc

    def _on_scale(self, event: Event) -> Event:
        """An alert with its severity on the configured scale; an unknown one is reported here, where it arrives."""
        data = event.data
        if not isinstance(data, AlertData):
            return event
        scale = self.config.alerts
        normalised = normalise(data, scale)
        if normalised.data is data:
            return event
        if normalised.unknown is not None:
            self.metrics.unknown_severities += 1
            log.warning("alert %s from %s has the unknown severity %r (the scale is %s; aliases: %s): it is treated "
                        "as %s, the raw value kept in its label severity_raw", data.name or data.fingerprint,
                        event.source, normalised.unknown, ", ".join(scale.severities),
                        ", ".join(f"{k}={v}" for k, v in scale.severity_aliases.items()) or "none",
                        normalised.data.severity)
        return event.model_copy(update={"data": normalised.data})

    @property
    def waiting(self) -> int:
        """Accepted events whose rule runs have not finished yet."""
        return self.dispatcher.waiting

    async def _submit_internal(self, events: Sequence[Event]) -> None:
        """Events raised by rules, tasks and timers: never refused for load (see the queue's comment)."""
        await self._accept(events, None)

    async def _accept(self, events: Sequence[Event], acknowledge: Acknowledge | None) -> None:
        new = await self.journal.accept(events)
        self.metrics.count_accepted(event.data.kind for event, _ in new)
        if acknowledge is not None:
            await acknowledge(events)
        for event, body in new:
            self.dispatcher.enqueue(event, body)

    async def press(
        self, button_id: str, actor: Actor, reply_to: ReplyTo | None, *, acknowledge: Acknowledge | None = None
    ) -> Event:
        who = actor.principal or f"{actor.platform}:{actor.account}"
        try:
            binding = await self.alerts.inspect(button_id)  # verified, not yet used up
            event = Event(
                source=actor.platform, actor=actor, reply_to=reply_to,
                data=ButtonData(button_id=binding.id, action=binding.action, arg=binding.arg, rule=binding.rule,
                                source_event=binding.event_id, alert_fingerprint=binding.fingerprint),
            )
            refusal = await press_refusal(event, self.runtime.graph, self.runtime.services, self.now())
            if refusal is not None:  # not allowed: the button stays for those who are
                raise AuthError(refusal)
            if binding.fingerprint is None or binding.action not in TOGGLES:
                await self.alerts.redeem(button_id)  # used up now (a concurrent press of the same button loses here)
            # an alert-state button is not used up: it works again after the state turns back (engine.runs.alerts)
        except AuthError as exc:  # unknown, altered, expired, replayed, or not this person's to press
            await self.audit.append("button.refused", who, reason=str(exc))
            raise
        await self.submit([event], acknowledge=acknowledge)
        return event

    async def cancel_task(self, task_id: str, by: str) -> str:
        """Cancel a pending task, or stop one this engine is running; say what happened."""
        task = await self.tasks.get(task_id)
        if task is None:
            return f"There is no task {task_id!r}."
        if task.status in FINAL:
            return f"Task {task_id} already {task.status}."
        cancelled = await self.tasks.cancel_pending(task_id, by)
        if cancelled is not None:
            await self.audit.append("task.cancelled", by, task=task_id, was="pending")
            await self.runtime.task_finished(cancelled)
            return f"Cancelled task {task_id} before it started."
        if self._workers.cancel(task_id, by):
            await self.audit.append("task.cancelled", by, task=task_id, was="running")
            return f"Stopping task {task_id}: its container is being removed."
        return f"Task {task_id} runs on {task.worker or 'another process'}; it cannot be cancelled from here yet."

    def register_connector(self, connector: Connector) -> Callable[[], Awaitable[None]]:
        return self.delivery.register(connector)

    def integration_config(self, name: str) -> BaseModel | None:
        return self._integration_configs.get(name)

    def spawn(self, name: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `fn()` as a background task the engine owns: cancelled and awaited when it stops. One spawned while
        the engine starts (an integration's poller, from its setup) begins once the engine accepts events, so what it
        fetches first is not refused as busy."""
        if self.state == "running":
            self._spawn(name, fn)
        else:
            self._until_running.append((name, fn))

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=10))
        return self._http

    def store(self, namespace: str) -> KeyValue:
        return SqliteKeyValue(self.db, namespace)

    async def history(self, platform: str, chats: Iterable[str], *, after: int, limit: int) -> list[Outgoing]:
        return await self.outbox.history(platform, chats, after=after, limit=limit)

    def now(self) -> float:
        return self.timers.clock.now().timestamp()

    def commands(self) -> tuple[CommandInfo, ...]:
        return self._commands.current

    def on_commands_changed(self, callback: CommandsChanged) -> Callable[[], None]:
        return self._commands.subscribe(callback)

    def _alertmanager_url(self) -> str | None:
        url = self.config.alerts.alertmanager_url
        return str(url).rstrip("/") if url is not None else None

    def _audit_soon(self, action: str, actor: str, **data: Any) -> None:
        self.runtime.services.audit_soon(action, actor, **data)

    async def _choices(self, reply_to: ReplyTo) -> list[str]:
        """The button handles of the newest notification with buttons in a conversation whose platform shows none
        (a numbered reply presses one of them)."""
        connector = self.delivery.connector(reply_to.platform)
        if connector is None or connector.capabilities.buttons:
            return []
        for item in reversed(await self.outbox.history(reply_to.platform, [reply_to.chat], after=0, limit=20)):
            if item.message.buttons:
                return [button.handle for button in item.message.buttons]
        return []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.state = "starting"
        require_private_folder(self.config.data_dir)  # 0700, or refuse to start (engine/core/private.py)
        await full_disk.open_store(self.db, SCHEMAS, host=self.config.http.host, port=self.config.http.port,
                                   ssl_context=tls_context(self.config.http))
        await restore.publish_recent(self.bus, self.runtime.services.board, journal=self.journal, alerts=self.alerts,
                                     outbox=self.outbox, db=self.db, tasks=self.tasks, audit=self.audit,
                                     limit=RECENT_ON_START)
        await self.alerts.load()
        await self.sandbox.start()
        stream = StreamConnector()
        self._unloads.append(self.delivery.register(stream))
        add_routes(self._app, self, stream)
        for integration in self.integrations:
            self._unloads.append(await integration.setup(self))
            log.info("integration %s loaded", integration.manifest.name)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port,
                           ssl_context=tls_context(self.config.http))
        await site.start()
        self.port = self._runner.addresses[0][1]
        await full_disk.wait_for_writes(self.db)  # meanwhile /healthz and every sender are told why nothing is taken
        await self.delivery.start()  # what a stop or crash left unsent goes out first, in order
        await self._local_token.start()
        self._spawn("local-token-renewal", self._local_token.renew_forever)
        await self.reloader.start(self._fallback)
        self._spawn("reloader", self.reloader.run)
        if self._watch:
            self._spawn("rules-watcher", self.reloader.watch)
        # before any event is handled: stateful clauses need their state; schedules are planned, stale state dropped
        self._detach_stateful = self.stateful.attach()
        await self.stateful.on_graph_swapped(None, self.runtime.graph)
        self.dispatcher.start(self._spawn)
        recovered = None
        if self.config.queue.redis_url:  # tasks run in `herald worker` processes
            await self._start_remote_tasks()
        else:
            recovered = await self._workers.recover()  # before any worker claims: see engine/tasks/recovery.py
            for n in range(self.config.workers):
                self._spawn(f"worker-{n}", self._workers.work)
            self._spawn("task-monitor", self._workers.monitor)
            self._spawn("task-adoption", functools.partial(self._workers.adopt, recovered.adoptions))
        self._spawn("output-relay", self.output_relay.run)
        self._spawn("housekeeping", self._housekeeping)
        self._spawn("alertmanager-silences", self.silence_sync.run)  # idle while no alertmanager_url is set
        self.state = "running"
        for name, fn in self._until_running:
            self._spawn(name, fn)
        self._until_running.clear()
        # left running by a crash: local ones adopted, run again or failed (engine/tasks/recovery.py); those of
        # `herald worker`s are left to them: their results wait in Redis, a dead worker's task is taken over
        for task in recovered.finished if recovered is not None else ():
            await self.runtime.task_finished(task)
        for task in await self.tasks.unreported():  # stored as finished, then a stop before its result went out
            await self.runtime.task_finished(task)
            self.tasks.reported(task.task_id)
        for event, body in await self.journal.unfinished():
            self.dispatcher.enqueue(event, body)  # accepted before a stop or crash: handle it now
        # timers that came due while Herald was down fire once, after a grace for clients to reconnect
        self._spawn("timers", functools.partial(self.timers.run, grace_s=self.config.start_grace_s))
        await self.audit.append("engine.started", "system", rules=len(self.graph.rules), port=self.port)
        log.info("Herald is running on http://%s:%s with %d rules", self.config.http.host, self.port,
                 len(self.graph.rules))

    async def stop(self) -> None:
        if self.state in ("stopping", "stopped", "new"):
            return
        self.state = "stopping"
        if self._runner is not None:
            await self._runner.cleanup()
        for unload in reversed(self._unloads):
            await unload()
        self.reloader.close()
        for task in self._background:
            task.cancel()
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=STOP_GRACE_S)
            for task in stuck:  # a bug, but stopping must not hang on it: say where it is stuck and go on
                where = io.StringIO()
                task.print_stack(file=where)
                log.error("background task %s did not stop within %.0f s; leaving it behind. It is at:\n%s",
                          task.get_name(), STOP_GRACE_S, where.getvalue())
        await self.delivery.close()
        if self._http is not None:
            await self._http.close()
        if self._redis is not None:
            await self._redis.close()
        if self._detach_stateful is not None:
            self._detach_stateful()
        await self.sandbox.close()
        await self.db.close()
        self.state = "stopped"

    # -- hot reload ----------------------------------------------------------------------------------------------

    async def reload(self, *, trigger: str = "api", actor: str = "system") -> ReloadView:
        """Reload rules and config now (the path `herald reload`, SIGHUP and the watcher take); see engine.reload."""
        return await self.reloader.reload(trigger=trigger, actor=actor)

    def request_reload(self, trigger: str = "signal") -> None:
        """Queue a reload from synchronous code (a signal handler); the reload loop runs it."""
        self.reloader.request(trigger)

    @property
    def api_token(self) -> str:
        """The local operator's API token, issued at start (engine.server.local_token)."""
        return self._local_token.value

    async def tell_admins(self, text: str) -> None:
        admins = tuple(name for name in self.config.principals if "admin" in self.directory.roles_of(name))
        await self.delivery.notify(Audience(team="admins", members=admins),
                                   Notification(event_id=new_id(), rule="(engine)", text=text, severity="warning"))

    @property
    def rules_stale(self) -> bool:
        return self.reloader.stale

    def swap(self, graph: EventGraph, teams: Sequence[TeamDecl], config: Config) -> int:
        """Put a new graph, and a new config with its people, in place in one step (no await); returns the
        version. Only the reloader calls this, after everything compiled and validated."""
        if config is not self.config:
            adopt_config(self.runtime.services, self.directory, config)
            self.db.min_free_bytes = config.min_free_disk_mb << 20
            self.config = config
        version = self.runtime.swap_graph(graph, declared_audiences(teams, self.connectors))
        self._commands.update(graph)  # integrations that registered native commands hear of a change
        return version

    async def audit_publish(self, action: str, actor: str, **data: Any) -> None:
        await self.audit.append(action, actor, **data)

    async def _start_remote_tasks(self) -> None:
        from engine.tasks.redis_queue import RemoteTasks  # only with a Redis URL configured

        self._redis = RemoteTasks(self.config.queue, self.tasks, self.runtime.task_finished, self.audit_publish)
        await self._redis.start()  # QueueError (not starting): Redis needs no password or refuses Herald
        for name, loop in self._redis.loops().items():  # they ride out outages (engine.tasks.redis_link)
            self._spawn(name, loop)

    async def _housekeeping(self) -> None:
        """Forget what is no longer needed, once an hour: finished outbox rows past their keep, expired buttons,
        history past `keep_history_days`."""
        while True:
            self.alerts.prune_buttons()
            try:
                self.metrics.forgotten["outbox"] += await self.outbox.prune()
                if self.config.keep_history_days:
                    self.metrics.forgotten.update(
                        await retention.forget_history(self.db, self.config.keep_history_days))
            except DurabilityError as exc:  # a full or failing disk: the next hour tries again
                log.warning("what is past its keep was not forgotten this time: %s", exc)
            await asyncio.sleep(HOUSEKEEPING_EVERY_S)

    def _spawn(self, name: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(fn(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s crashed", task.get_name(), exc_info=task.exception())
