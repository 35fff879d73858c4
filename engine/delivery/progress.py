"""Live output of running tasks: lines from the sandbox go to the conversation that asked and to observers,
throttled so a chatty script cannot flood a chat platform or the TUI.

Lines are buffered per task and flushed at most once per `interval_s` per task (chat platforms limit message
rates and edits; one update a second is within every platform's limits). Each flush carries at most
`MAX_LINES_PER_FLUSH` lines; the rest is summarised as a count, never dropped silently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine.core.bus import Bus
from engine.delivery.delivery import Delivery
from engine.delivery.outlets import Output
from engine.tasks.queue import TaskRecord

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
        batch, self._pending = self._pending, {}
        for pending in batch.values():
            task = pending.task
            lines = pending.lines + ([f"[... {pending.skipped} more lines]"] if pending.skipped else [])
            self._bus.publish(task.view().model_copy(update={"output_tail": pending.tail.lstrip("\n")}))
            if task.reply_to is not None and lines:
                await self._delivery.reply(task.reply_to, Output(task.run_id, task.rule, task.task_id, tuple(lines)))
