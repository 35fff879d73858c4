"""Rule runs: what happens to one accepted event.

For each rule the compiled graph matches, a RuleRun walks INIT -> CHECK_PERMISSION -> VALIDATE_PARAMS -> [stages,
CONFIRM] -> EXECUTE -> REPORT_RESULT, or stops at DENIED, REJECTED or SKIPPED. Every transition is published to
observers and, for commands, sent back to the conversation as progress. `run_trace` stores each one except the checks
a run passes through (`PASSED_THROUGH`): the state it reached next implies them, and they were three of the five rows
of a notification's run (a check that stops the run stores its outcome, DENIED or REJECTED, with why). Actions and
stages are dispatched by type (engine.actions, engine.stages). A `run` action hands a task to the queue; the run reaches
REPORT_RESULT when a worker reports the task finished, from the task record itself, so a restart in between still
reports; the finished task is then an event of its own (`on task ...`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3

from dsl import EventGraph
from dsl.values import human_duration
from engine.client.snapshots import EventView, RunView
from engine.core.errors import DurabilityError
from engine.core.events import AlertData, ButtonData, Cause, CommandData, Event, MessageData, TaskData, utcnow
from engine.core.ids import derived_id
from engine.core.journal import Journal
from engine.delivery.outlets import Audience, Progress, Result, Text
from engine.runs import actions, decide, stages
from engine.runs.builtins import BUILTIN_BUTTONS, BUILTIN_COMMANDS, help_text, press, run_builtin
from engine.runs.run import RuleRun, RunState, Services, event_view, now_iso, who
from engine.runs.unmatched import Unmatched
from engine.tasks.queue import TaskRecord

# Observed live, not stored: any later state of the run implies them.
PASSED_THROUGH = frozenset({RunState.INIT, RunState.CHECK_PERMISSION, RunState.VALIDATE_PARAMS})
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
DROP INDEX IF EXISTS run_trace_run;  -- the trace is read by event (engine.runs.trace), never by run
CREATE INDEX IF NOT EXISTS run_trace_event ON run_trace(event_id);
"""

TAIL_CHARS = 2000


class Runtime:
    def __init__(self, *, graph: EventGraph, services: Services, journal: Journal,
                 declared_teams: dict[str, Audience] | None = None) -> None:
        self.services = services
        self._journal = journal
        self.graph = graph
        self.graph_version = 1
        self._unmatched = Unmatched()
        self._set_teams(declared_teams or {})

    @property
    def unmatched_alerts(self) -> int:
        """Firing alerts no rule matched since start (`herald_alerts_unmatched_total`)."""
        return self._unmatched.count

    def swap_graph(self, graph: EventGraph, declared_teams: dict[str, Audience]) -> int:
        """Make `graph` the one new events are matched against, in one step (no await: no event sees half of it).
        Runs already under way finish with the graph they started with. Returns the new version number."""
        self.graph = graph
        self.graph_version += 1
        self._set_teams(declared_teams)
        return self.graph_version

    def _set_teams(self, declared: dict[str, Audience]) -> None:
        """The rule files' teams, over the built-in ones (a rule file's `team ops` replaces the default `ops`)."""
        defaults = {name: Audience(name, tuple(team.members), actions.team_targets(team.chat_rooms, team.targets))
                    for name, team in self.services.config.default_teams().items()}
        self.services.declared_teams.clear()
        self.services.declared_teams.update({**defaults, **declared})

    async def handle(self, event: Event) -> None:
        """Run every matching rule for an accepted event, then mark it handled in the journal."""
        services = self.services
        services.bus.publish_lazy(EventView, event.id, functools.partial(event_view, event))
        graph, version = self.graph, self.graph_version  # one version for the whole event, even across a swap
        data = event.data
        fields = event.fields()
        heard = False  # an alert a dead man's switch watches
        if isinstance(data, CommandData):
            if data.name in BUILTIN_COMMANDS:  # a built-in may answer at once: its entry is durable first
                await services.audit_publish("command.received", who(event), event=event.id, text=data.safe_text)
            else:  # a rule run's next awaited write (an effect, a task, a refusal's entry) commits it too
                services.audit_soon("command.received", who(event), event=event.id, text=data.safe_text)
            if data.name in BUILTIN_COMMANDS:
                await run_builtin(event, data, graph, services)
                self._journal.mark_handled(event.id, now_iso(), version)
                return
            fields.update(decide.command_fields(event, data, graph))
        elif isinstance(data, ButtonData):
            await press(event, data, services)
        elif isinstance(data, AlertData):
            heard = services.stateful is not None and await services.stateful.alert_arrived(event, data)
            # "who was paged, when" starts here (the journal holds the arrival); notification.sent says where it went
            services.board.seen(event)
            if data.status == "firing" and (until := await services.alerts.muted_until(data.fingerprint)):
                services.board.muted(data.fingerprint, until)  # e.g. a Herald silence muted it on arrival
            if data.status == "resolved":
                last = await services.alerts.resolved(data.fingerprint)
                if services.upstream is not None:
                    await services.upstream.lift(data.fingerprint)
                await services.delivery.follow(data.fingerprint, dataclasses.replace(
                    last, fired_at=data.starts_at, resolved_at=data.ends_at or event.time))

        rules = graph.match(event.kind, fields)
        if not rules and not heard:
            await self._nothing_matched(event, graph)
        for rule in rules:
            try:
                # The run's id is derived, so a replay after a crash is the same run and its effects are not redone.
                await self._run(RuleRun(derived_id(event.time, "run", event.id, rule.name), rule, event, dict(fields)))
            except DurabilityError:  # not recorded: the event is not handled yet, and runs again later
                raise
            except Exception:
                log.exception("rule %s failed on event %s", rule.name, event.id)
        self._journal.mark_handled(event.id, now_iso(), version)

    async def _nothing_matched(self, event: Event, graph: EventGraph) -> None:
        data, delivery = event.data, self.services.delivery
        if isinstance(data, CommandData):
            text = f"Unknown command /{data.name}. {help_text(event, graph, self.services)}"
        elif isinstance(data, MessageData):
            text = "I only understand commands, like /help."
        elif isinstance(data, ButtonData) and data.action not in BUILTIN_BUTTONS:
            text = f"Nothing is set up for the button {data.action!r}."
        elif isinstance(data, AlertData):
            await self._unmatched.alert(event, data, self.services)
            return
        else:
            return
        await delivery.reply(event.reply_to, Text(text))

    # -- the state machine -------------------------------------------------------------------------------------

    async def _run(self, run: RuleRun) -> None:
        services, event, rule = self.services, run.event, run.rule
        await self._enter(run, RunState.INIT)
        await self._enter(run, RunState.CHECK_PERMISSION)
        refusal = decide.refusal(event, rule, services.directory.roles_of)
        if refusal is not None:
            await services.audit_publish("command.denied" if run.is_command else "run.denied", who(event),
                                         event=event.id, rule=rule.name, reason=refusal)
            await self._enter(run, RunState.DENIED, refusal)
            await services.delivery.reply(event.reply_to, Text(f"Denied: {refusal}."))
            return
        if run.is_command:  # durable with the effect claim or task that follows (commits keep their order)
            services.audit_soon("command.allowed", who(event), event=event.id, rule=rule.name)

        await self._enter(run, RunState.VALIDATE_PARAMS)
        problem, bound = decide.invalid_params(event, rule)
        if problem is not None:
            await services.audit_publish("command.rejected", who(event), event=event.id, rule=rule.name,
                                         reason=problem)
            await self._enter(run, RunState.REJECTED, problem)
            await services.delivery.reply(event.reply_to, Text(f"Rejected: {problem}."))
            return
        run.fields.update(bound)
        await self.continue_run(run, first_stage=0)

    async def continue_run(self, run: RuleRun, *, first_stage: int) -> None:
        """Run the stages from `first_stage` on, then the actions. A parked stage (a confirmation) calls this
        again, with the stage after it, when it is released."""
        services, event, rule = self.services, run.event, run.rule
        for index in range(first_stage, len(rule.stages)):
            outcome = await stages.evaluate(rule.stages[index], run, services, index)
            if outcome.proceed:
                continue
            await self._enter(run, outcome.state, outcome.reason)
            if not outcome.parked:
                await services.delivery.reply(event.reply_to, Text(f"Not run: {outcome.reason}."))
            return

        await self._enter(run, RunState.EXECUTE)
        notes, waiting = [], False
        for action in rule.actions:
            result = await actions.perform(action, run, services)
            notes.append(result.note)
            if result.task_id is not None:
                waiting = True
                if event.reply_to is not None:
                    await services.delivery.reply(event.reply_to, Progress(run.run_id, rule.name,
                                                                          RunState.EXECUTE.value, result.note))
        if not waiting:
            text = "; ".join(notes) or "done"
            await self._enter(run, RunState.REPORT_RESULT, text)
            if run.is_command:
                await services.delivery.reply(event.reply_to, Result(run.run_id, rule.name, True, text))

    async def _enter(self, run: RuleRun, state: RunState, detail: str = "") -> None:
        await self._trace(run.run_id, run.event.id, run.rule.name, state, detail)
        if run.is_command:
            await self.services.delivery.reply(run.event.reply_to, Progress(run.run_id, run.rule.name, state.value,
                                                                           detail))

    async def _trace(self, run_id: str, event_id: str, rule: str, state: RunState, detail: str) -> None:
        time = now_iso()
        if state not in PASSED_THROUGH:
            # A trace is a record, not an effect: it rides along with the next commit instead of waiting for one.
            self.services.db.defer_row("INSERT INTO run_trace VALUES (?, ?, ?, ?, ?, ?)",
                                       (run_id, state.value, time, event_id, rule, detail))
        self.services.bus.publish_lazy(RunView, run_id, functools.partial(
            RunView, run_id=run_id, event_id=event_id, rule=rule, state=state.value, time=time, detail=detail))

    # -- task results ------------------------------------------------------------------------------------------

    async def task_finished(self, task: TaskRecord) -> None:
        """Called by the workers with what the queue stored: a final record (record the result, finish the run that
        asked for it, raise the task event) or, after a failed attempt with retries left, the waiting retry."""
        services = self.services
        if task.status == "pending":
            await self._retry_scheduled(task)
            return
        await services.audit_publish("task.finished", task.requested_by or "system", task=task.task_id,
                                     status=task.status, exit_code=task.exit_code, script=task.params.script,
                                     attempt=task.attempt)
        text = task.outcome()
        if task.attempt > 1:
            text += f" on attempt {task.attempt} of {task.attempts}"
        await self._trace(task.run_id, task.event_id, task.rule, RunState.REPORT_RESULT, text)
        await services.delivery.reply(task.reply_to, Progress(task.run_id, task.rule, RunState.REPORT_RESULT.value,
                                                             text))
        await services.delivery.reply(task.reply_to, Result(task.run_id, task.rule, task.status == "succeeded", text,
                                                           task.task_id, task.exit_code, task.output))
        if task.depth + 1 > actions.MAX_EMIT_DEPTH:
            return
        duration = (task.end_time - task.start_time).total_seconds() if task.end_time and task.start_time else None
        # Only what the script wrote to each stream; Herald's own reason (cancelled, could not start) goes with stderr.
        stderr = "\n".join(part for part in (task.stderr_tail.rstrip("\n"), task.error or "") if part)
        await services.submit([Event(
            id=derived_id(task.create_time, "task-event", task.task_id), source="tasks", reply_to=task.reply_to,
            data=TaskData(task_id=task.task_id, script=task.params.script, status=task.status,
                          exit_code=task.exit_code, duration=duration,
                          stdout_tail=task.stdout_tail[-TAIL_CHARS:], stderr_tail=stderr[-TAIL_CHARS:], rule=task.rule),
            cause=Cause(root=task.event_id, parent=task.event_id, depth=task.depth + 1),
        )])


    async def _retry_scheduled(self, task: TaskRecord) -> None:
        """Say that an attempt failed and when the next one starts; the run stays open until the last attempt."""
        assert task.not_before is not None
        failed = task.earlier[-1]
        delay_s = max(0.0, (task.not_before - utcnow()).total_seconds())
        await self.services.audit_publish("task.retry", task.requested_by or "system", task=task.task_id,
                                          script=task.params.script, failed=failed, attempt=task.attempt,
                                          attempts=task.attempts, not_before=task.not_before.isoformat())
        text = f"{failed}; retrying in {human_duration(delay_s)} (attempt {task.attempt} of {task.attempts})"
        await self._trace(task.run_id, task.event_id, task.rule, RunState.EXECUTE, text)
        await self.services.delivery.reply(task.reply_to, Progress(task.run_id, task.rule, RunState.EXECUTE.value,
                                                                  text))


def recent_runs(conn: sqlite3.Connection, limit: int) -> list[RunView]:
    """The latest state of the `limit` runs that moved last, oldest first: what observers see after a restart.

    Only the trace's tail is read (a run writes a handful of states), so a long history costs nothing at start."""
    latest: dict[str, RunView] = {}
    for row in conn.execute("SELECT * FROM run_trace ORDER BY rowid DESC LIMIT ?", (limit * 8,)):
        if row["run_id"] not in latest and len(latest) < limit:
            latest[row["run_id"]] = RunView(run_id=row["run_id"], event_id=row["event_id"], rule=row["rule"],
                                            state=row["state"], time=row["time"], detail=row["detail"])
    return list(reversed(latest.values()))

