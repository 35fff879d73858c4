"""Rule runs: what happens to one accepted event.

For each rule the compiled graph matches, a RuleRun walks INIT -> CHECK_PERMISSION -> VALIDATE_PARAMS -> EXECUTE ->
REPORT_RESULT (or stops at DENIED / REJECTED). Every transition is stored in `run_trace`, published to observers and,
for commands, sent back to the conversation as progress. A `run` action hands a task to the queue; the run reaches
REPORT_RESULT when a worker reports the task finished, from the task record itself, so a restart in between still
reports.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from dsl import CompiledRule, EventGraph, NotifyAction, RunAction
from engine.alerts import MUTE_DURATIONS, AlertState
from engine.audit import AuditLog
from engine.bus import Bus
from engine.config import Config
from engine.errors import AuthError
from engine.events import AlertData, ButtonData, CommandData, Event
from engine.identity import Directory
from engine.ids import new_id
from engine.journal import Journal
from engine.outlets import Audience, Notification, Outlets, Progress, Result, Text
from engine.snapshots import EventView, RunView
from engine.store import Database
from engine.tasks import TaskParams, TaskQueue, TaskRecord

log = logging.getLogger("herald.runtime")

SCHEMA = """
CREATE TABLE IF NOT EXISTS run_trace (
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    time TEXT NOT NULL,
    event_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS run_trace_run ON run_trace(run_id);
"""

BUILTIN_COMMANDS = {
    "help": "list the commands you may run",
    "whoami": "say which person this account acts for",
    "link": "bind this account to a person with a one-time token from `herald identity link NAME`",
}
# Until commands declare typed arguments, an argument must be a plain word: no shell metacharacters, no option-like
# leading '-', bounded length. It still reaches the script as one argv element, never through a shell.
_PLAIN_ARG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/=@+,-]{0,127}")
MAX_ARGS = 16


class RunState(StrEnum):
    INIT = "INIT"
    CHECK_PERMISSION = "CHECK_PERMISSION"
    VALIDATE_PARAMS = "VALIDATE_PARAMS"
    EXECUTE = "EXECUTE"
    REPORT_RESULT = "REPORT_RESULT"
    DENIED = "DENIED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class RuleRun:
    run_id: str
    rule: CompiledRule
    event: Event


def summarize(event: Event) -> str:
    """One line describing an event, for views and default notification texts."""
    data = event.data
    if isinstance(data, AlertData):
        head = f"[{(data.severity or 'unknown').upper()}]" if data.status == "firing" else "[RESOLVED]"
        what = " ".join(part for part in (data.name, data.summary and f"— {data.summary}") if part)
        return f"{head} {data.service or '?'}: {what or data.fingerprint}"
    if isinstance(data, CommandData):
        return f"{_who(event)}: {data.safe_text}"
    return f"{_who(event)} pressed {data.action}{' ' + data.arg if data.arg else ''}"


def _who(event: Event) -> str:
    if event.actor is None:
        return event.source
    return event.actor.principal or f"{event.actor.platform}:{event.actor.account}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def validate_args(args: tuple[str, ...]) -> str | None:
    """Return why the arguments are refused, or None when every one is acceptable."""
    if len(args) > MAX_ARGS:
        return f"too many arguments ({len(args)}; at most {MAX_ARGS})"
    for arg in args:
        if not _PLAIN_ARG.fullmatch(arg):
            return (f"argument {arg!r} is not allowed: use letters, digits and . _ : / = @ + , - "
                    "(not starting with a symbol, at most 128 characters)")
    return None


class Runtime:
    def __init__(
        self, *, graph: EventGraph, config: Config, directory: Directory, db: Database, journal: Journal,
        audit: AuditLog, tasks: TaskQueue, alerts: AlertState, outlets: Outlets, bus: Bus,
    ) -> None:
        self.graph = graph
        self._config = config
        self._directory = directory
        self._db = db
        self._journal = journal
        self._audit = audit
        self._tasks = tasks
        self._alerts = alerts
        self._outlets = outlets
        self._bus = bus

    async def handle(self, event: Event) -> None:
        """Run every matching rule for an accepted event, then mark it handled in the journal."""
        self._bus.publish(EventView(id=event.id, kind=event.kind, source=event.source,
                                    time=event.time.isoformat(), summary=summarize(event)))
        data = event.data
        if isinstance(data, CommandData):
            await self._audit_publish("command.received", _who(event), event=event.id, text=data.safe_text)
            if data.name in BUILTIN_COMMANDS:
                await self._builtin(event, data)
                self._journal.mark_handled(event.id, _now())
                return
        elif isinstance(data, ButtonData):
            await self._press(event, data)
        elif isinstance(data, AlertData) and data.status == "resolved":
            await self._alerts.resolved(data.fingerprint)

        rules = self.graph.match(event.kind, event.fields())
        if isinstance(data, CommandData) and not rules:
            await self._outlets.reply(event.reply_to, Text(f"Unknown command /{data.name}. {self._help_for(event)}"))
        for rule in rules:
            try:
                await self._run(RuleRun(new_id(), rule, event))
            except Exception:
                log.exception("rule %s failed on event %s", rule.name, event.id)
        self._journal.mark_handled(event.id, _now())

    # -- the state machine -------------------------------------------------------------------------------------

    async def _run(self, run: RuleRun) -> None:
        event, rule = run.event, run.rule
        await self._enter(run, RunState.INIT)
        await self._enter(run, RunState.CHECK_PERMISSION)
        refusal = self._refusal(rule, event)
        if refusal is not None:
            await self._audit_publish("command.denied", _who(event), event=event.id, rule=rule.name, reason=refusal)
            await self._enter(run, RunState.DENIED, refusal)
            await self._outlets.reply(event.reply_to, Text(f"Denied: {refusal}."))
            return
        if isinstance(event.data, CommandData):
            await self._audit_publish("command.allowed", _who(event), event=event.id, rule=rule.name)

        await self._enter(run, RunState.VALIDATE_PARAMS)
        args = event.data.args if isinstance(event.data, CommandData) else ()
        problem = validate_args(args)
        if problem is not None:
            await self._audit_publish("command.rejected", _who(event), event=event.id, rule=rule.name, reason=problem)
            await self._enter(run, RunState.REJECTED, problem)
            await self._outlets.reply(event.reply_to, Text(f"Rejected: {problem}."))
            return

        await self._enter(run, RunState.EXECUTE)
        waiting_for_tasks = False
        notes = []
        for action in rule.actions:
            if isinstance(action, NotifyAction):
                notes.append(await self._notify(run, action))
            elif isinstance(action, RunAction):
                await self._enqueue(run, action, args)
                waiting_for_tasks = True
        if not waiting_for_tasks:
            text = "; ".join(notes) or "done"
            await self._enter(run, RunState.REPORT_RESULT, text)
            if isinstance(event.data, CommandData):
                await self._outlets.reply(event.reply_to, Result(run.run_id, rule.name, True, text))

    def _refusal(self, rule: CompiledRule, event: Event) -> str | None:
        if not isinstance(event.data, CommandData):
            return None
        principal = event.actor.principal if event.actor else None
        if principal is None:
            return (f"/{event.data.name} needs an account linked to a person: ask an admin for a token "
                    "(`herald identity link NAME`), then send /link TOKEN")
        missing = [role for role in rule.required_roles if role not in self._directory.roles_of(principal)]
        if missing:
            return f"/{event.data.name} requires role {', '.join(missing)}, which {principal} does not have"
        return None

    async def _enter(self, run: RuleRun, state: RunState, detail: str = "") -> None:
        time = _now()
        row = (run.run_id, state.value, time, run.event.id, run.rule.name, detail)
        await self._db.write(lambda conn: conn.execute("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)", row))
        self._bus.publish(RunView(run_id=run.run_id, event_id=run.event.id, rule=run.rule.name,
                                  state=state.value, time=time, detail=detail))
        if isinstance(run.event.data, CommandData):
            await self._outlets.reply(run.event.reply_to, Progress(run.run_id, run.rule.name, state.value, detail))

    # -- actions -----------------------------------------------------------------------------------------------

    async def _notify(self, run: RuleRun, action: NotifyAction) -> str:
        event, data = run.event, run.event.data
        team = self._config.teams.get(action.team)
        if team is None:  # the compiler checks teams; a config reload could still remove one
            return f"team {action.team} is not configured"
        fingerprint = data.fingerprint if isinstance(data, AlertData) else None
        if fingerprint is not None:
            until = await self._alerts.muted_until(fingerprint)
            if until is not None:
                return f"muted until {until.isoformat(timespec='minutes')}"
        buttons = ()
        if action.buttons and fingerprint is not None:
            buttons = await self._alerts.make_buttons(event_id=event.id, rule=run.rule.name, fingerprint=fingerprint)
        note = Notification(event_id=event.id, rule=run.rule.name, text=summarize(event), buttons=buttons,
                            severity=data.severity if isinstance(data, AlertData) else None)
        audience = Audience(action.team, tuple(team.members), tuple(team.chat_rooms))
        delivered = await self._outlets.notify(audience, note)
        return f"notified {action.team} ({delivered} session{'s' if delivered != 1 else ''})"

    async def _enqueue(self, run: RuleRun, action: RunAction, args: tuple[str, ...]) -> None:
        event = run.event
        command = event.data.text if isinstance(event.data, CommandData) else event.kind
        task = TaskRecord(
            platform=event.reply_to.platform if event.reply_to else event.source,
            command=command,
            params=TaskParams(script=action.script, args=list(args),
                              timeout=action.timeout_s or self._config.sandbox.default_timeout_s),
            run_id=run.run_id, rule=run.rule.name, event_id=event.id,
            requested_by=event.actor.principal if event.actor else None, reply_to=event.reply_to,
        )
        await self._tasks.enqueue(task)
        await self._audit_publish("task.queued", _who(event), task=task.task_id, script=action.script,
                                  args=list(args), rule=run.rule.name)
        if event.reply_to is not None:
            await self._outlets.reply(event.reply_to, Progress(run.run_id, run.rule.name, RunState.EXECUTE.value,
                                                               f"task {task.task_id} queued: {action.script}"))

    async def task_finished(self, task: TaskRecord) -> None:
        """Called by the workers: record the result and finish the run that asked for the task."""
        await self._audit_publish("task.finished", task.requested_by or "system", task=task.task_id,
                                  status=task.status, exit_code=task.exit_code, script=task.params.script)
        ok = task.status == "succeeded"
        text = f"{task.params.script} {task.status}"
        if task.exit_code is not None:
            text += f" (exit code {task.exit_code})"
        if task.error:
            text += f": {task.error}"
        time = _now()
        row = (task.run_id, RunState.REPORT_RESULT.value, time, task.event_id, task.rule, text)
        await self._db.write(lambda conn: conn.execute("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)", row))
        self._bus.publish(RunView(run_id=task.run_id, event_id=task.event_id, rule=task.rule,
                                  state=RunState.REPORT_RESULT.value, time=time, detail=text))
        await self._outlets.reply(task.reply_to, Progress(task.run_id, task.rule, RunState.REPORT_RESULT.value, text))
        await self._outlets.reply(task.reply_to, Result(task.run_id, task.rule, ok, text, task.task_id,
                                                        task.exit_code, task.output))

    # -- built-ins ---------------------------------------------------------------------------------------------

    async def _builtin(self, event: Event, data: CommandData) -> None:
        if data.name == "help":
            await self._outlets.reply(event.reply_to, Text(self._help_for(event)))
        elif data.name == "whoami":
            await self._outlets.reply(event.reply_to, Text(self._whoami(event)))
        elif data.name == "link":
            await self._link(event, data)

    def _whoami(self, event: Event) -> str:
        if event.actor is None:
            return "This event has no sender."
        where = f"{event.actor.platform} account {event.actor.account}"
        principal = event.actor.principal
        if principal is None:
            return f"Your {where} is not linked to a person. Ask an admin for `herald identity link NAME`, " \
                   "then send /link TOKEN."
        roles = ", ".join(sorted(self._directory.roles_of(principal))) or "none"
        return f"You are {principal} (roles: {roles}) on {where}."

    async def _link(self, event: Event, data: CommandData) -> None:
        if event.actor is None or len(data.args) != 1:
            await self._outlets.reply(event.reply_to, Text("Usage: /link TOKEN (the token from "
                                                           "`herald identity link NAME`)."))
            return
        actor = event.actor
        try:
            principal = await self._directory.link(data.args[0], actor.platform, actor.account)
        except AuthError as exc:
            await self._audit_publish("identity.link_refused", _who(event), platform=actor.platform,
                                      account=actor.account, reason=str(exc))
            await self._outlets.reply(event.reply_to, Text(f"Link refused: {exc}."))
            return
        await self._audit_publish("identity.linked", principal, platform=actor.platform, account=actor.account)
        roles = ", ".join(sorted(self._directory.roles_of(principal))) or "none"
        await self._outlets.reply(event.reply_to, Text(f"Linked: this {actor.platform} account now acts for "
                                                       f"{principal} (roles: {roles})."))

    def _help_for(self, event: Event) -> str:
        principal = event.actor.principal if event.actor else None
        roles = self._directory.roles_of(principal)
        allowed = sorted(
            name for name, rules in self.graph.commands().items()
            if principal is not None and any(set(rule.required_roles) <= roles for rule in rules)
        )
        names = ", ".join(f"/{name}" for name in sorted({*allowed, *BUILTIN_COMMANDS}))
        return f"You can run: {names}."

    async def _press(self, event: Event, data: ButtonData) -> None:
        who = _who(event)
        await self._audit_publish("button.pressed", who, event=event.id, button=data.action, arg=data.arg,
                                  alert=data.alert_fingerprint, source_event=data.source_event, rule=data.rule)
        if data.alert_fingerprint is None:
            return
        if data.action == "ack":
            earlier = await self._alerts.acknowledge(data.alert_fingerprint, who)
            text = (f"Already acknowledged by {earlier}." if earlier else f"Acknowledged by {who}.")
        elif data.action == "mute" and data.arg in MUTE_DURATIONS:
            until = await self._alerts.mute(data.alert_fingerprint, who, MUTE_DURATIONS[data.arg])
            text = f"Muted by {who} until {until.isoformat(timespec='minutes')}."
        else:
            text = f"Button {data.action!r} does nothing here."
        await self._outlets.reply(event.reply_to, Text(text))

    async def _audit_publish(self, action: str, actor: str, **data: object) -> None:
        self._bus.publish(await self._audit.append(action, actor, **data))


def trace_of(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The states a run went through, in order (for tests and the API)."""
    return [row["state"] for row in conn.execute("SELECT state FROM run_trace WHERE run_id = ? ORDER BY rowid",
                                                 (run_id,))]
