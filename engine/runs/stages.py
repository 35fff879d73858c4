"""The clauses a rule runs before its actions (dsl.plan stages), one handler per stage type, through a registry.

A handler says whether the run goes on. Stateful stages (dedupe, group, rate limit, confirmation) register their
handlers from their own module; `require role` is decided earlier, in CHECK_PERMISSION.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dsl.plan import CheckDiskStage, RequireRoleStage
from engine.runs.run import RuleRun, RunState, Services


@dataclass(frozen=True)
class StageOutcome:
    proceed: bool
    reason: str = ""
    state: RunState = RunState.SKIPPED  # the state a stopped run ends in
    parked: bool = False  # the run waits (a confirmation, a group window); something else will resume it


PROCEED = StageOutcome(True)
# (stage, run, services, the stage's index in the rule) -> outcome; the index lets a parked stage resume after itself
StageHandler = Callable[[Any, RuleRun, Services, int], Awaitable[StageOutcome]]
HANDLERS: dict[type, StageHandler] = {}


def handles(kind: type) -> Callable[[StageHandler], StageHandler]:
    def register(handler: StageHandler) -> StageHandler:
        HANDLERS[kind] = handler
        return handler

    return register


async def evaluate(stage: object, run: RuleRun, services: Services, index: int) -> StageOutcome:
    handler = HANDLERS.get(type(stage))
    if handler is None:  # the catalog only admits stages the engine provides; this is a wiring bug
        raise RuntimeError(f"no handler for stage {type(stage).__name__}")
    return await handler(stage, run, services, index)


@handles(RequireRoleStage)
async def require_role(stage: RequireRoleStage, run: RuleRun, services: Services, index: int) -> StageOutcome:
    return PROCEED  # decided in CHECK_PERMISSION, before anything else


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@handles(CheckDiskStage)
async def check_disk(stage: CheckDiskStage, run: RuleRun, services: Services, index: int) -> StageOutcome:
    try:
        usage = await asyncio.to_thread(shutil.disk_usage, stage.path)
    except OSError as exc:
        return StageOutcome(False, f"cannot check disk space of {stage.path}: {exc.strerror or exc}")
    if usage.free < stage.free_bytes:
        return StageOutcome(False, f"not enough disk space: {stage.path} has {_size(usage.free)} free, "
                                   f"needs {_size(stage.free_bytes)}")
    return PROCEED
