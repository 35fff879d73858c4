"""Live output of running tasks: lines from the sandbox go to the conversation that asked and to observers,
throttled so a chatty script cannot flood a chat platform or the TUI.

Lines are buffered per task and flushed at most once per `interval_s` per task (chat platforms limit message
rates and edits; one update a second is within every platform's limits). Each flush carries at most
`MAX_LINES_PER_FLUSH` lines; the rest is summarised as a count, never dropped silently.

Per task, output always comes before the result: the engine passes the task's report through `reporting_after`,
which sends the task's last buffered lines (and waits for a flush already sending) before the result goes out. A
finished task is forgotten at once, so no later flush republishes the running record over the final one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine.core.bus import Bus
from engine.delivery.delivery import Delivery
from engine.delivery.outlets import Output
from engine.tasks.queue import TaskRecord

Report = Callable[[TaskRecord], Awaitable[None]]

MAX_LINES_PER_FLUSH = 20
MAX_LINE_CHARS = 500


@dataclass
class _Pending:
    task: TaskRecord
    lines: list[str] = field(default_factory=list)
    skipped: int = 0
    tail: str = ""


class OutputRelay:
    def __init__(self, delivery: Delivery, bus: Bus, *, interval_s: float = 1.0) -> None:
        self._delivery = delivery
        self._bus = bus
        self._interval_s = interval_s
        self._pending: dict[str, _Pending] = {}
        self._sending = asyncio.Lock()  # held while lines go out, so a result waits for them

    def line(self, task: TaskRecord, text: str) -> None:
        """Take one output line (called on the event loop as the script prints)."""
        pending = self._pending.setdefault(task.task_id, _Pending(task))
        text = text[:MAX_LINE_CHARS]
        pending.tail = (pending.tail + "\n" + text)[-400:]
        if len(pending.lines) < MAX_LINES_PER_FLUSH:
            pending.lines.append(text)
        else:
            pending.skipped += 1

    async def run(self) -> None:
        """Flush buffered lines every `interval_s` until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        async with self._sending:
            batch, self._pending = self._pending, {}
            # Every view first, with no await in between: a task that finishes while lines go out below is
            # then never shown as running again after its final record.
            for pending in batch.values():
                self._bus.publish(pending.task.view().model_copy(update={"output_tail": pending.tail.lstrip("\n")}))
            for pending in batch.values():
                await self._send(pending)

    def reporting_after(self, report: Report) -> Report:
        """Wrap the report of a finished task so that the task's buffered lines go out before it."""
        async def finished(task: TaskRecord) -> None:
            pending = self._pending.pop(task.task_id, None)  # before any await: no flush can pick it up now
            async with self._sending:
                if pending is not None:
                    await self._send(pending)
            await report(task)

        return finished

    async def _send(self, pending: _Pending) -> None:
        task = pending.task
        lines = pending.lines + ([f"[... {pending.skipped} more lines]"] if pending.skipped else [])
        if task.reply_to is not None and lines:
            await self._delivery.reply(task.reply_to, Output(task.run_id, task.rule, task.task_id, tuple(lines)))
