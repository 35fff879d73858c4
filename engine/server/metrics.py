"""`GET /metrics`: the engine's health in the Prometheus text format (version 0.0.4), for the scraper an ops team
already runs.

Counters are kept as plain integers where the work happens (one dict increment per accepted event, nothing per
rule step); gauges are read when scraped (the task table is counted by one indexed query). Names follow Prometheus'
conventions: `herald_` prefix, `_total` for counters, base units (seconds).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, get_args

from dsl import EventGraph
from engine.core.bus import Bus
from engine.core.config import Config
from engine.core.events import EventData
from engine.core.store import Database
from engine.delivery.delivery import Delivery
from engine.delivery.outbox import Outbox
from engine.runs.runtime import Runtime
from engine.runs.silence_sync import SilenceSync
from engine.server.retention import FORGET as FORGOTTEN_TABLES
from engine.tasks.queue import TaskQueue

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TASK_STATUSES = ("pending", "running", "succeeded", "failed", "timed_out", "cancelled")
# Every kind is exported from the start (at 0), so a rate() over a kind never begins with a missing series.
EVENT_KINDS = tuple(sorted(data.model_fields["kind"].default for data in get_args(get_args(EventData)[0])))


class Metrics:
    """The counters the engine keeps for `/metrics`."""

    def __init__(self) -> None:
        self.started = time.time()
        self.accepted: Counter[str] = Counter(dict.fromkeys(EVENT_KINDS, 0))  # events journaled, by kind
        self.stalled = 0  # accepted events whose rule runs hit a full disk and waited for it (engine.server.dispatch)
        self.refused = 0  # events refused with "busy" (503 / a busy reply): the queue was full or Herald stopping
        self.unknown_severities = 0  # alerts that arrived with a severity neither on the scale nor an alias
        # rows forgotten past their keep (engine.server.retention, the outbox's prune), by table
        self.forgotten: Counter[str] = Counter(dict.fromkeys((*FORGOTTEN_TABLES, "outbox"), 0))

    def count_accepted(self, kinds: Iterable[str]) -> None:
        self.accepted.update(kinds)

    def count_stalled(self) -> None:
        self.stalled += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Mapping[Any, float] | float,
            label: str | tuple[str, ...] = "") -> list[str]:
    """One metric family: HELP, TYPE and its samples (a number, or numbers by the value of `label`, or of several
    labels when the keys are tuples)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    labels = (label,) if isinstance(label, str) else label
    if isinstance(samples, Mapping):
        for key, value in sorted(samples.items()):
            values = key if isinstance(key, tuple) else (key,)
            pairs = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(labels, values, strict=True))
            lines.append(f"{name}{{{pairs}}} {_number(value)}")
    else:
        lines.append(f"{name} {_number(samples)}")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Observed(Protocol):
    """What a scrape reads of the engine."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def state(self) -> str: ...
    @property
    def waiting(self) -> int: ...
    @property
    def config(self) -> Config: ...
    @property
    def db(self) -> Database: ...
    @property
    def graph(self) -> EventGraph: ...
    @property
    def rules_stale(self) -> bool: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def bus(self) -> Bus: ...
    @property
    def delivery(self) -> Delivery: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def tasks(self) -> TaskQueue: ...  # its `outage`: /healthz and herald_queue_up
    @property
    def silence_sync(self) -> SilenceSync: ...  # its `reachable`: herald_alertmanager_up


async def render(engine: Observed) -> str:
    """The exposition text for one scrape."""
    metrics = engine.metrics
    rows = await engine.db.call(lambda conn: conn.execute(
        "SELECT status, count(*) AS n FROM tasks GROUP BY status").fetchall())
    tasks = dict.fromkeys(TASK_STATUSES, 0) | {row["status"]: row["n"] for row in rows}
    delivery = engine.delivery
    pending = dict.fromkeys(delivery.platforms, 0) | await engine.outbox.pending_counts()
    lines = [
        *_family("herald_start_time_seconds", "gauge", "When this engine started, in seconds since the epoch.",
                 metrics.started),
        *_family("herald_up", "gauge", "1 while the engine is running and accepting events.",
                 int(engine.state == "running")),
        *_family("herald_events_accepted_total", "counter",
                 "Events journaled (durable) since start, by kind.", dict(metrics.accepted), "kind"),
        *_family("herald_events_refused_total", "counter",
                 "Events refused as busy (webhook 503, chat busy reply) since start.", metrics.refused),
        *_family("herald_events_stalled_total", "counter",
                 "Accepted events whose rule runs hit a full data disk and waited for it (then ran again).",
                 metrics.stalled),
        *_family("herald_alerts_unknown_severity_total", "counter",
                 "Alerts that arrived with a severity neither on the [alerts] scale nor an alias (treated as the "
                 "most severe) since start.", metrics.unknown_severities),
        *_family("herald_alerts_unmatched_total", "counter",
                 "Firing alerts no rule matched since start (sent to [alerts] unmatched when set).",
                 engine.runtime.unmatched_alerts),
        *_family("herald_events_waiting", "gauge", "Accepted events waiting for their rule runs.",
                 engine.waiting),
        *_family("herald_events_waiting_limit", "gauge", "The waiting events beyond which new ones are refused.",
                 engine.config.max_queued_events),
        *_family("herald_store_commits_total", "counter",
                 "SQLite transactions committed (each made durable with one fsync; many writes share one).",
                 engine.db.commits),
        *_family("herald_tasks", "gauge", "Tasks in the queue's table, by status.", tasks, "status"),
        *_family("herald_queue_up", "gauge", "1 while tasks can be handed to workers (0: Redis unreachable; the "
                 "embedded queue is always 1).", int(engine.tasks.outage is None)),
        *_family("herald_alertmanager_up", "gauge", "1 while Alertmanager's silences can be read (0: unreachable, "
                 "Herald's view of them waits; -1: no alertmanager_url or not asked yet).",
                 {True: 1, False: 0, None: -1}[engine.silence_sync.reachable]),
        *_family("herald_storage_up", "gauge", "1 while the data disk takes writes (0: full or failing; new events "
                 "are refused until it recovers).", int(engine.db.trouble is None)),
        *_family("herald_rules", "gauge", "Rules in the running graph.", len(engine.graph.rules)),
        *_family("herald_rules_version", "gauge", "The running graph's version (each accepted reload adds one).",
                 engine.runtime.graph_version),
        *_family("herald_rules_stale", "gauge", "1 while the rule files on disk are not what runs (a rejected "
                 "reload, or a start on the last rules that compiled).", int(engine.rules_stale)),
        *_family("herald_observers", "gauge", "Live-update subscribers (TUI and stream clients).",
                 engine.bus.subscriber_count),
        *_family("herald_outbox_messages_total", "counter",
                 "Outgoing messages finished since start, by platform and outcome (sent, failed, superseded).",
                 {(p, o): n for (p, o), n in delivery.counts.items()}, ("platform", "outcome")),
        *_family("herald_outbox_pending", "gauge", "Outgoing messages journaled and not yet delivered, by platform.",
                 pending, "platform"),
        *_family("herald_history_forgotten_total", "counter",
                 "Rows forgotten past their keep since start (keep_history_days; the outbox's 7 days), by table.",
                 dict(metrics.forgotten), "table"),
        *_family("herald_notifications_unreached_total", "counter",
                 "Notifications that reached nobody (no conversation, or no one connected to see it) since start.",
                 delivery.unreached),
    ]
    return "\n".join(lines) + "\n"
