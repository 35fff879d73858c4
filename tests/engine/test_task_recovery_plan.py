"""The recovery table (engine/tasks/recovery.py), row by row: what becomes of a task left running, given its stored
container and what Podman lists. The e2e test (tests/e2e/test_task_recovery.py) runs the same rows for real."""

from __future__ import annotations

from engine.sandbox.leftovers import Leftover
from engine.tasks.queue import TaskParams, TaskRecord
from engine.tasks.recovery import plan


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
