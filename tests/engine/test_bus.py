"""The observer bus: lazily published views are built only when someone looks, and look the same when they are."""

from __future__ import annotations

import functools

from engine.client.snapshots import RunView
from engine.core.bus import Bus


def _run_view(state: str, built: list[str]) -> RunView:
    built.append(state)
    return RunView(run_id="r1", event_id="e1", rule="page", state=state, time="2026-11-27T00:00:00.000+00:00")


async def test_lazy_views_are_built_only_for_a_snapshot_and_only_the_newest() -> None:
    bus, built = Bus(), []
    for state in ("INIT", "CHECK_PERMISSION", "EXECUTE"):
        bus.publish_lazy(RunView, "r1", functools.partial(_run_view, state, built))
    assert built == []  # nobody looked yet
    assert [run.state for run in bus.snapshot().runs] == ["EXECUTE"]
    assert built == ["EXECUTE"]


async def test_a_subscriber_gets_every_lazy_view_at_once() -> None:
    bus, built = Bus(), []
    sub, unsubscribe = bus.subscribe()
    for state in ("INIT", "EXECUTE"):
        bus.publish_lazy(RunView, "r1", functools.partial(_run_view, state, built))
    assert [sub.queue.get_nowait().state for _ in range(2)] == ["INIT", "EXECUTE"]  # type: ignore[union-attr]
    unsubscribe()
    bus.publish_lazy(RunView, "r1", functools.partial(_run_view, "REPORT_RESULT", built))
    assert built == ["INIT", "EXECUTE"]
    assert [run.state for run in bus.snapshot().runs] == ["REPORT_RESULT"]


async def test_the_bus_keeps_only_the_newest_views() -> None:
    bus = Bus(keep=3)
    for n in range(5):
        bus.publish_lazy(RunView, f"r{n}", functools.partial(
            RunView, run_id=f"r{n}", event_id="e", rule="x", state="INIT", time="t"))
    assert [run.run_id for run in bus.snapshot().runs] == ["r2", "r3", "r4"]
