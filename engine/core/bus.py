"""Live updates for observers (the TUI stream, tests): recent snapshot records plus fan-out to subscribers.

Views that are costly to build and mostly replaced before anyone looks (a run's every state, every event) can be
published lazily (`publish_lazy`): built at once only while someone is subscribed, else when a snapshot asks.

Subscribing returns the function that unsubscribes. Each subscriber has a bounded queue: an observer too slow to
keep up is dropped (it reconnects and gets a fresh snapshot) instead of making the engine hold unbounded memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from engine.client.snapshots import AlertView, AuditView, EventView, RulesView, RunView, Snapshot, TaskView

Update = EventView | RunView | TaskView | AuditView | RulesView | AlertView

_KEYS: dict[type, Callable[[Update], object]] = {
    EventView: lambda v: v.id,  # type: ignore[union-attr]
    RunView: lambda v: v.run_id,  # type: ignore[union-attr]
    TaskView: lambda v: v.task_id,  # type: ignore[union-attr]
    AuditView: lambda v: v.seq,  # type: ignore[union-attr]
    RulesView: lambda v: "rules",  # one at a time: the newest replaces the last
    AlertView: lambda v: v.fingerprint,  # type: ignore[union-attr]
}


class Subscription:
    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(capacity)
        self.overflowed = False

    def offer(self, update: Update) -> None:
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed = True


# The board keeps every alert of a storm of hundreds (one row per fingerprint), not only the newest `keep` updates.
KEEP_ALERTS = 5_000


class Bus:
    def __init__(self, keep: int = 200, keep_alerts: int = KEEP_ALERTS) -> None:
        self._keep = keep
        self._keep_alerts = max(keep, keep_alerts)
        self._recent: dict[type, OrderedDict[object, Update | Callable[[], Update]]] = {
            kind: OrderedDict() for kind in _KEYS}
        self._subscribers: set[Subscription] = set()

    def publish(self, update: Update) -> None:
        self._remember(type(update), _KEYS[type(update)](update), update)
        for sub in list(self._subscribers):
            sub.offer(update)

    def publish_lazy(self, kind: type, key: object, build: Callable[[], Update]) -> None:
        """Publish what `build()` makes (a `kind` keyed by `key`), building it only when somebody needs it."""
        if self._subscribers:
            self.publish(build())
        else:
            self._remember(kind, key, build)

    def _remember(self, kind: type, key: object, update: Update | Callable[[], Update]) -> None:
        recent = self._recent[kind]
        recent.pop(key, None)
        recent[key] = update
        if len(recent) > (self._keep_alerts if kind is AlertView else self._keep):
            recent.popitem(last=False)

    def snapshot(self) -> Snapshot:
        def items(kind: type) -> list:
            # a view is a pydantic model, never callable: what is callable is a view not built yet
            return [item() if callable(item) else item for item in self._recent[kind].values()]

        rules = items(RulesView)
        return Snapshot(events=items(EventView), runs=items(RunView), tasks=items(TaskView), audit=items(AuditView),
                        alerts=items(AlertView), rules=rules[-1] if rules else None)

    def subscribe(self, capacity: int = 1000) -> tuple[Subscription, Callable[[], None]]:
        sub = Subscription(capacity)
        self._subscribers.add(sub)
        return sub, lambda: self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
