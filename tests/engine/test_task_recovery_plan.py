"""The recovery table (engine/tasks/recovery.py), row by row: what becomes of a task left running, given its stored
container and what Podman lists. The e2e test (tests/e2e/test_task_recovery.py) runs the same rows for real."""

from __future__ import annotations

from engine.sandbox.leftovers import Leftover
from engine.tasks.queue import TaskParams, TaskRecord
from engine.tasks.recovery import plan, take_over


def task(task_id: str = "t1", *, container: str | None = None, attempt: int = 1) -> TaskRecord:
    return TaskRecord(task_id=task_id, platform="chat", command="/x", status="running", attempt=attempt,
                      params=TaskParams(script="x.sh", timeout=60, retries=3), run_id="r", rule="x",
                      event_id="e", container=container)


def box(container_id: str, task_id: str | None = "t1", *, started: bool = True, attempt: int | None = 1) -> Leftover:
    return Leftover(container_id=container_id, task_id=task_id, attempt=attempt,
                    state="running" if started else "created", started_at=1.0e9 if started else None, run_uid=None)


def test_no_container_stored_runs_again_and_an_unstarted_one_is_removed() -> None:
    result = plan([task()], [box("c1", started=False)])
    assert [t.status for t in result.rerun] == ["pending"] and result.rerun[0].attempt == 1
    assert not result.adopt and not result.failed and [c.container_id for c in result.remove] == ["c1"]


def test_a_started_container_is_adopted_even_without_a_stored_id() -> None:
    result = plan([task(container="c1"), task("t2")], [box("c1"), box("c2", "t2")])
    assert [(t.task_id, c.container_id) for t, c in result.adopt] == [("t1", "c1"), ("t2", "c2")]
    assert not result.rerun and not result.failed and not result.remove


def test_a_stored_container_that_never_started_runs_again() -> None:
    result = plan([task(container="c1")], [box("c1", started=False)])
    assert [t.task_id for t in result.rerun] == ["t1"] and [c.container_id for c in result.remove] == ["c1"]


def test_a_stored_container_that_is_gone_fails_without_retry_and_never_reruns() -> None:
    result = plan([task(container="c1")], [])
    [failed] = result.failed
    assert (failed.status, failed.attempt) == ("failed", 1)  # stored as is by the queue: final, not retried
    assert "c1 is gone" in (failed.error or "") and not result.rerun and not result.adopt


def test_when_podman_cannot_be_asked_only_unstarted_tasks_run_again() -> None:
    result = plan([task(container="c1"), task("t2")], None, "no podman service answers")
    assert [t.task_id for t in result.rerun] == ["t2"]
    assert [t.task_id for t in result.failed] == ["t1"]
    assert "could not check its container c1: no podman service answers" in (result.failed[0].error or "")


def test_containers_of_other_attempts_and_tasks_are_not_adopted_but_removed() -> None:
    result = plan([task(attempt=2)], [box("old", attempt=1), box("stray", "t9"), box("c2", attempt=2)])
    assert [(t.task_id, c.container_id) for t, c in result.adopt] == [("t1", "c2")]
    assert sorted(c.container_id for c in result.remove) == ["old", "stray"]


# A `herald worker` taking over a task from a worker that stopped (engine.tasks.recovery.take_over); the e2e test is
# tests/e2e/test_redis_workers.py.

def test_a_taken_over_task_whose_container_started_here_is_adopted() -> None:
    decision = take_over([box("c1"), box("c0", started=False)], started_on="h1", host="h1")
    assert decision.adopt is not None and decision.adopt.container_id == "c1"
    assert not decision.rerun and decision.failed is None and [c.container_id for c in decision.remove] == ["c0"]


def test_a_taken_over_task_with_no_start_recorded_runs() -> None:
    decision = take_over([box("c0", started=False)], started_on=None, host="h1")
    assert decision.rerun and decision.adopt is None and [c.container_id for c in decision.remove] == ["c0"]


def test_a_taken_over_task_recorded_here_whose_container_never_ran_runs() -> None:
    assert take_over([box("c0", started=False)], started_on="h1", host="h1").rerun


def test_a_taken_over_task_that_started_but_is_gone_or_elsewhere_is_failed_never_rerun() -> None:
    gone = take_over([], started_on="h1", host="h1")
    elsewhere = take_over([], started_on="h2", host="h1")
    unknown = take_over(None, started_on="h1", host="h1", problem="podman is down")
    for decision, why in ((gone, "is gone"), (elsewhere, "started on h2"), (unknown, "podman is down")):
        assert not decision.rerun and decision.adopt is None and decision.failed and why in decision.failed
