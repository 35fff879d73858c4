"""An in-memory `EngineClient` for tests of the TUI: canned and pushed updates, recorded commands and presses, and
the details (event traces, task outputs) it was given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from engine.client.remote import EngineClientError, Reply, Update
from engine.client.snapshots import EventTrace, TaskDetail


class StaticEngineClient:
    """An in-memory `EngineClient` for tests: yields canned updates, takes pushed ones, records commands."""

    def __init__(
        self,
        updates: list[Update],
        *,
        status: str = "connected",
        reply: Callable[[str], str] | None = None,
        traces: dict[str, EventTrace] | None = None,
        tasks: dict[str, TaskDetail] | None = None,
    ) -> None:
        self.status = status
        self.traces = traces or {}
        self.tasks = tasks or {}
        self.sent: list[str] = []
        self.pressed: list[str] = []
        self.closed = False
        self._reply = reply
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        for update in updates:
            self._queue.put_nowait(update)

    def push(self, update: Update) -> None:
        """Deliver one more update to the consumer, as a live engine would."""
        self._queue.put_nowait(update)

    async def updates(self) -> AsyncIterator[Update]:
        """Yield the given and pushed updates until `close()`."""
        while (update := await self._queue.get()) is not None:
            yield update

    async def send_command(self, text: str) -> None:
        """Record the command and, if a `reply` function was given, answer it with a Reply update."""
        self.sent.append(text)
        if self._reply is not None:
            self.push(Reply(id=f"static-{len(self.sent)}", text=self._reply(text)))

    async def press(self, button_id: str) -> None:
        """Record the press."""
        self.pressed.append(button_id)

    async def event_trace(self, event_id: str) -> EventTrace:
        if event_id not in self.traces:
            raise EngineClientError(f"the engine answered 404: no event {event_id!r} in the journal")
        return self.traces[event_id]

    async def task_detail(self, task_id: str) -> TaskDetail:
        if task_id not in self.tasks:
            raise EngineClientError(f"the engine answered 404: no task {task_id!r}")
        return self.tasks[task_id]

    async def close(self) -> None:
        """End `updates()`."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
