"""After a crash: what becomes of each task the last process left `running`. Adopt it, run it again, or fail it.

Pure: `plan` gets those task records and this engine's containers as Podman lists them (or why it could not list
them) and decides; `TaskWorkers.recover` carries the plan out. A task's container id is stored with it before the
container starts (`TaskRecord.container`), and a container is removed only once its task's result is stored, so:

    container stored?   its container now                      decision
    no                  none, or created and never started      run again: pending, same attempt
    yes                 started (running, or exited meanwhile)  adopt: wait for its exit; that is the task's result
    yes                 created, never started                  run again
    yes                 gone (a stop removed it, or someone)    failed, result unknown; not run again
    yes                 Podman cannot be asked                  failed, could not check; not run again

A task whose script started never runs again: running it twice is worse than reporting that its result is lost.
Every container of this owner that no task adopts is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.events import utcnow
from engine.sandbox.leftovers import Leftover
from engine.tasks.record import TaskRecord


@dataclass
class Plan:
    adopt: list[tuple[TaskRecord, Leftover]] = field(default_factory=list)
    rerun: list[TaskRecord] = field(default_factory=list)  # pending again, same attempt: its script never started
    failed: list[TaskRecord] = field(default_factory=list)  # final: the result cannot be known
    remove: list[Leftover] = field(default_factory=list)  # containers nobody adopts


def plan(running: list[TaskRecord], found: list[Leftover] | None, problem: str | None = None) -> Plan:
    """Decide for each task in `running`; `found` is None when Podman could not be asked (`problem` says why)."""
    result = Plan()
    containers = list(found or [])
    claimed: set[str] = set()
    for task in running:
        own = [c for c in containers if _belongs(c, task)]
        # Without a stored id no container of it can have started (the id is stored first); one that did anyway
        # (a record written before that rule, say) is adopted all the same: it must not run twice.
        started = [c for c in own if c.started and task.container in (None, c.container_id)]
        if started:
            result.adopt.append((task, started[0]))
            claimed.add(started[0].container_id)
        elif task.container is None or any(c.container_id == task.container for c in own):
            result.rerun.append(task.model_copy(update={
                "status": "pending", "start_time": None, "container": None, "worker": None, "not_before": None}))
        else:
            why = (f"could not check its container {task.container[:12]}: {problem}" if found is None
                   else f"its container {task.container[:12]} is gone")
            result.failed.append(task.model_copy(update={
                "status": "failed", "end_time": utcnow(),
                "error": f"interrupted: Herald stopped while this task was running and {why}, so its result is "
                         "unknown; it is not run again"}))
    result.remove = [c for c in containers if c.container_id not in claimed]
    return result


def _belongs(container: Leftover, task: TaskRecord) -> bool:
    return container.task_id == task.task_id and container.attempt in (None, task.attempt)


@dataclass
class TakeOver:
    """What a `herald worker` does with a task it took over from a worker that stopped (see `take_over`)."""

    adopt: Leftover | None = None
    rerun: bool = False
    failed: str | None = None  # why its result cannot be known
    remove: list[Leftover] = field(default_factory=list)  # its containers that never started


def take_over(found: list[Leftover] | None, started_on: str | None, host: str, problem: str | None = None) -> TakeOver:
    """Decide for a task taken over from a worker that stopped. `found`: the task's containers on this machine (None
    when Podman could not be asked, `problem` says why); `started_on`: the machine the earlier worker recorded, in
    Redis, before it started the task's container (None: no container of it ever started).

        a container of it started here           adopt: its exit code and output are the result
        no start recorded                        run it (removing containers that were created, never started)
        recorded here, its container never ran   run it (the worker stopped between the record and the start)
        recorded here, container gone            failed, result unknown; not run again
        started on another machine               failed, cannot be checked from here; not run again
    """
    containers = list(found or [])
    started = [c for c in containers if c.started]
    never = [c for c in containers if not c.started]
    if started:
        return TakeOver(adopt=started[0], remove=never)
    if started_on is None or (started_on == host and never):
        return TakeOver(rerun=True, remove=never)
    if found is None:
        why = f"its container could not be checked ({problem})"
    elif started_on != host:
        why = f"it started on {started_on}, where this worker cannot see its container"
    else:
        why = "its container is gone"
    return TakeOver(failed=f"interrupted: the worker running it stopped and {why}, so its result is unknown; it is "
                           "not run again", remove=never)
