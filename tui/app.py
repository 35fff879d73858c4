"""Herald's terminal console: live tables of events, runs, tasks and audit entries, the running rules, the alerts
with their buttons (tui.alerts), plus a command line.

The app is built by `make_app(client)` around an `EngineClient` and holds only snapshot records from
`engine.snapshots`. A background worker reads `client.updates()` and posts `EngineUpdate` messages; the app
routes each one to the table for its record type. Every table is keyed by the record's stable id, so an update
for a row already shown (a task going from running to succeeded) replaces that row in place. The Rules tab is
tui.rules; Enter on a row opens its detail (tui.detail); `?` lists the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from engine.client.remote import EngineClient, EngineClientError, Reply, Update
from engine.client.snapshots import AlertView, AuditView, EventView, RuleEntry, RulesView, RunView, Snapshot, TaskView
from tui.alerts import AlertsTable
from tui.detail import DetailScreen, alert_text, audit_text, rule_text, task_text, trace_text
from tui.rules import RulesPane
from tui.tables import RecordTable, clock, last_line, short_id


class EventsTable(RecordTable[EventView]):
    """Events in arrival order."""

    COLUMNS = (("time", "Time"), ("kind", "Kind"), ("source", "Source"), ("summary", "Summary"))

    def key_of(self, record: EventView) -> str:
        return record.id

    def cells_of(self, record: EventView) -> tuple[str, ...]:
        return (clock(record.time), record.kind, record.source, record.summary)


class RunsTable(RecordTable[RunView]):
    """Rule runs; a run's row changes state in place."""

    COLUMNS = (
        ("time", "Time"),
        ("rule", "Rule"),
        ("state", "State"),
        ("event", "Event"),
        ("detail", "Detail"),
    )
    WIDTHS: ClassVar[dict[str, int]] = {"rule": 24}

    def key_of(self, record: RunView) -> str:
        return record.run_id

    def cells_of(self, record: RunView) -> tuple[str, ...]:
        return (clock(record.time), record.rule, record.state, short_id(record.event_id), record.detail)


class TasksTable(RecordTable[TaskView]):
    """Sandboxed script runs; a task's row changes status, exit code and output in place. `c` cancels the task
    under the cursor (through `/cancel`, so the engine decides whether you may)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "cancel_task", "Cancel task")]
    WIDTHS: ClassVar[dict[str, int]] = {"command": 18, "script": 14}

    def action_cancel_task(self) -> None:
        record = self.current()
        app = self.app
        if isinstance(app, HeraldApp) and record is not None:
            app.show_reply(f"sent: /cancel {record.task_id}")
            app.send_command(f"/cancel {record.task_id}")

    COLUMNS = (
        ("task", "Task"),
        ("command", "Command"),
        ("script", "Script"),
        ("status", "Status"),
        ("exit", "Exit"),
        ("output", "Output"),
    )

    def key_of(self, record: TaskView) -> str:
        return record.task_id

    def cells_of(self, record: TaskView) -> tuple[str, ...]:
        exit_code = "" if record.exit_code is None else str(record.exit_code)
        return (
            short_id(record.task_id),
            record.command,
            record.script,
            record.status if record.attempts == 1 else f"{record.status} ({record.attempt}/{record.attempts})",
            exit_code,
            last_line(record.output_tail),
        )


class AuditTable(RecordTable[AuditView]):
    """The audit trail, by sequence number."""

    COLUMNS = (
        ("seq", "Seq"),
        ("time", "Time"),
        ("action", "Action"),
        ("actor", "Actor"),
        ("summary", "Summary"),
    )

    def key_of(self, record: AuditView) -> str:
        return str(record.seq)

    def cells_of(self, record: AuditView) -> tuple[str, ...]:
        return (str(record.seq), clock(record.time), record.action, record.actor, record.summary)


class EngineUpdate(Message):
    """One update from the engine stream, carried from the stream worker to the app."""

    def __init__(self, update: Update) -> None:
        super().__init__()
        self.update = update

    def can_replace(self, message: Message) -> bool:
        """A queued run or task update is superseded by a newer one for the same row; snapshots by snapshots."""
        if not isinstance(message, EngineUpdate):
            return False
        old, new = self.update, message.update
        if isinstance(old, Snapshot):
            return isinstance(new, Snapshot)
        if isinstance(old, TaskView) and isinstance(new, TaskView):
            return old.task_id == new.task_id
        if isinstance(old, RunView) and isinstance(new, RunView):
            return old.run_id == new.run_id
        if isinstance(old, AlertView) and isinstance(new, AlertView):
            return old.fingerprint == new.fingerprint
        return isinstance(old, RulesView) and isinstance(new, RulesView)


class StreamEnded(Message):
    """The update stream stopped for good (the engine refused us, or the client was closed)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class ConnectionBar(Static):
    """The one-line header: app title and the client's connection status, coloured by health.

    It polls `read_status` on its own timer because a reconnecting client changes status between updates; the
    timer belongs to this widget, so it stops when the widget is removed at exit.
    """

    def __init__(self, title: str, read_status: Callable[[], str], *, id: str) -> None:
        super().__init__(id=id)
        self._title = title
        self._read_status = read_status

    def on_mount(self) -> None:
        self.refresh_status()
        self.set_interval(0.25, self.refresh_status)

    def refresh_status(self) -> None:
        """Show the current status; cheap enough to call after every update."""
        status = self._read_status()
        self.update(f"{self._title} │ engine: {status}")
        self.set_class(status.startswith("connected"), "-ok")
        self.set_class(status.startswith(("failed", "closed")), "-failed")


VIEWS = ("events", "runs", "tasks", "audit", "rules", "alerts")  # keys 1-6


class HeraldApp(App[None]):
    """The console: a connection header, one tab per record type, a reply line and a command input."""

    TITLE = "Herald"
    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None  # an auto-focused Input would swallow q, 1-5 and / as text
    ENABLE_COMMAND_PALETTE = False  # its footer entry would push ours off an 80-column screen; `?` lists the keys
    BINDINGS: ClassVar[list[BindingType]] = [
        # One footer entry for the six tab keys, so the footer fits 80 columns.
        *(Binding(str(n), f"show_view('{view}')", "Tabs" if n == 1 else view.title(), show=n == 1,
                  key_display="1-6" if n == 1 else None) for n, view in enumerate(VIEWS, start=1)),
        Binding("slash", "focus_command", "Command"),
        Binding("question_mark", "show_keys", "Keys"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("escape", "leave_command", "Back to table", show=False),
    ]

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self.client = client
        self._tables: dict[type[BaseModel], RecordTable] = {}

    def compose(self) -> ComposeResult:
        # Widgets are built here, not in __init__: a DataTable needs the running app to add its columns.
        self._header = ConnectionBar(self.TITLE, lambda: self.client.status, id="header")
        self._reply = Static("type a command such as /backup now and press enter", id="reply")
        self._tables = {
            EventView: EventsTable(id="events-table"),
            RunView: RunsTable(id="runs-table"),
            TaskView: TasksTable(id="tasks-table"),
            AuditView: AuditTable(id="audit-table"),
            AlertView: AlertsTable(id="alerts-table"),
        }
        yield self._header
        self._rules = RulesPane()
        tabs = dict(zip(("events", "runs", "tasks", "audit", "alerts"), self._tables.values(), strict=True))
        with TabbedContent(initial="events"):
            for view in VIEWS:
                if view == "rules":
                    yield self._rules
                    continue
                with TabPane(view.title(), id=view):
                    yield tabs[view]
        yield self._reply
        yield Input(placeholder="/command  (press / to type)", id="command", select_on_focus=False)
        yield Footer()

    def on_mount(self) -> None:
        self.consume_updates()

    async def on_unmount(self) -> None:
        await self.client.close()

    @work(group="stream", exclusive=True)
    async def consume_updates(self) -> None:
        """Read the client's update stream for the life of the app and hand each update to the UI."""
        try:
            async for update in self.client.updates():
                self.post_message(EngineUpdate(update))
        except EngineClientError as exc:
            self.post_message(StreamEnded(str(exc)))
        else:
            self.post_message(StreamEnded("the update stream ended"))

    def on_engine_update(self, message: EngineUpdate) -> None:
        update = message.update
        if isinstance(update, Snapshot):
            self._tables[EventView].load(update.events)
            self._tables[RunView].load(update.runs)
            self._tables[TaskView].load(update.tasks)
            self._tables[AuditView].load(update.audit)
            self._tables[AlertView].load(update.alerts)
            if update.rules is not None:
                self._rules.show(update.rules)
        elif isinstance(update, RulesView):
            self._rules.show(update)
        elif isinstance(update, Reply):
            self.show_reply(update.text, error=update.error)
        else:
            self._tables[type(update)].upsert(update)
        self._header.refresh_status()

    def on_alerts_table_press(self, message: AlertsTable.Press) -> None:
        if message.button is None:
            self.show_reply(f"{message.alert}: no {message.action} button to press (it does not apply now, was "
                            "already pressed, or the alert is resolved or was sent without buttons)", error=True)
            return
        self.show_reply(f"pressed: {message.button.label} on {message.alert}")
        self.press_button(message.button.id)

    @work(group="commands")
    async def press_button(self, button_id: str) -> None:
        """Press an alert's button without blocking the UI; the engine's answer arrives as a Reply update."""
        try:
            await self.client.press(button_id)
        except EngineClientError as exc:
            self.show_reply(f"not pressed: {exc}", error=True)

    def on_stream_ended(self, message: StreamEnded) -> None:
        self._header.refresh_status()
        self.show_reply(message.reason, error=True)

    def show_reply(self, text: str, *, error: bool = False) -> None:
        """Show a command's reply (or why it was not sent) on the line above the input."""
        self._reply.update(text)
        self._reply.set_class(error, "-error")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if text:
            self.show_reply(f"sent: {text}")
            self.send_command(text)
        self.action_leave_command()  # the keys are the table's again: arrows, Enter, 1-6, q

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        """Enter on a row: open the record in full (fetching an event's trace or a task's output first)."""
        table = message.data_table
        record = table.current() if isinstance(table, RecordTable) else None
        if isinstance(record, AuditView):
            self.push_screen(DetailScreen(audit_text(record)))
        elif isinstance(record, RuleEntry):
            self.push_screen(DetailScreen(rule_text(record)))
        elif isinstance(record, EventView):
            self.open_detail("event", record.id)
        elif isinstance(record, RunView):
            self.open_detail("event", record.event_id)
        elif isinstance(record, AlertView) and record.event_id:
            self.open_detail("event", record.event_id, heading=alert_text(record))
        elif isinstance(record, AlertView):
            self.push_screen(DetailScreen(alert_text(record)))
        elif isinstance(record, TaskView):
            self.open_detail("task", record.task_id)

    @work(group="detail", exclusive=True)
    async def open_detail(self, kind: str, key: str, *, heading: str = "") -> None:
        """Fetch what the detail screen shows from the engine, without blocking the UI (`heading`: shown first)."""
        try:
            if kind == "task":
                text = task_text(await self.client.task_detail(key))
            else:
                text = trace_text(await self.client.event_trace(key))
        except EngineClientError as exc:
            self.show_reply(f"no detail for {kind} {key}: {exc}", error=True)
            return
        self.push_screen(DetailScreen(f"{heading}\n\n{text}" if heading else text))

    def action_show_keys(self) -> None:
        """List every key the console answers to."""
        self.push_screen(DetailScreen(keys_text()))

    @work(group="commands")
    async def send_command(self, text: str) -> None:
        """Send one command without blocking the UI; the answer arrives later as a Reply update."""
        try:
            await self.client.send_command(text)
        except EngineClientError as exc:
            self.show_reply(f"not sent: {exc}", error=True)

    def action_show_view(self, view: str) -> None:
        """Switch to a tab and focus its table so arrow keys scroll it."""
        self.query_one(TabbedContent).active = view
        self.query_one(f"#{view}-table", DataTable).focus()

    def action_focus_command(self) -> None:
        """Focus the command input, starting the command with the '/' just typed."""
        command = self.query_one("#command", Input)
        if not command.value:
            command.value = "/"
        command.focus()
        command.cursor_position = len(command.value)

    def action_leave_command(self) -> None:
        """Leave the command input for the current tab's table."""
        active = self.query_one(TabbedContent).active
        if active:
            self.query_one(f"#{active}-table", DataTable).focus()


KEYS = (
    ("1-6", "switch tab: " + ", ".join(f"{n} {view.title()}" for n, view in enumerate(VIEWS, start=1))),
    ("up/down", "move in the table (also pgup, pgdn, home, end)"),
    ("enter", "open the row's detail: an event's trace, a task's whole output, an audit entry, a rule, an alert's "
              "escalations and trace"),
    ("/", "type a command (enter sends it, escape goes back to the table)"),
    ("escape", "back to the table (from the command line or a detail)"),
    ("c", "Tasks tab: cancel the task under the cursor"),
    ("a", "Alerts tab: press the alert's Acknowledge button"),
    ("m", "Alerts tab: press the alert's Mute button"),
    ("?", "this list"),
    ("q", "quit (ctrl+q from anywhere)"),
)


def keys_text() -> str:
    return "Keys\n\n" + "\n".join(f"{key:<9} {what}" for key, what in KEYS)


def make_app(client: EngineClient) -> HeraldApp:
    """Build the console around `client`; the app closes the client when it exits."""
    return HeraldApp(client)
