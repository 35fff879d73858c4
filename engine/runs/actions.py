"""What rules do: one handler per action type of the compiled plan (dsl.plan), found through a registry.

A handler returns a short note for the run's result, or the id of a task whose result will finish the run later.
Modules that add action types (the stateful ones: silence, escalate) register their handlers here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dsl import render_template
from dsl.args import argument_problem
from dsl.plan import DEFAULT_BUTTONS, EmitAction, NotifyAction, ReplyAction, RunAction
from engine.core.events import AlertData, Cause, CommandData, EmittedData, Event
from engine.core.ids import derived_id
from engine.delivery.message import Conversation
from engine.delivery.outlets import Audience, Button, Notification, Text
from engine.delivery.storm import alert_line
from engine.runs.links import alert_links
from engine.runs.run import RuleRun, Services, summarize, who
from engine.tasks.queue import DEFAULT_BACKOFF_S, TaskParams, TaskRecord

MAX_EMIT_DEPTH = 8  # stops loops through outside systems; loops inside the rules are compile errors
# Untyped command words passed to a script must be plain: no shell metacharacters, no option-like leading '-', no
# '..' path segment (dsl.args.argument_problem, the policy typed arguments follow too). They still reach the script
# as one argv element each, never through a shell.
_PLAIN_ARG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/=@+,-]{0,127}")
MAX_ARGS = 16


@dataclass(frozen=True)
class ActionOutcome:
    note: str
    task_id: str | None = None  # set when the run finishes only once this task reports


ActionHandler = Callable[[Any, RuleRun, Services], Awaitable[ActionOutcome]]
HANDLERS: dict[type, ActionHandler] = {}


def handles(kind: type) -> Callable[[ActionHandler], ActionHandler]:
    def register(handler: ActionHandler) -> ActionHandler:
        HANDLERS[kind] = handler
        return handler

    return register


EFFECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, time TEXT NOT NULL);
"""
# Actions whose effect is made idempotent by a derived id instead (a task id, an emitted event's id, the outbox key of
# a notification or reply: a replay produces the same key, and the outbox stores a key once).
_SELF_IDEMPOTENT = (RunAction, EmitAction, NotifyAction, ReplyAction)


async def perform(action: object, run: RuleRun, services: Services) -> ActionOutcome:
    """Carry out one action at most once per (run, action): a replay after a crash skips what was done."""
    handler = HANDLERS.get(type(action))
    if handler is None:  # the catalog only admits actions the engine provides; this is a wiring bug
        raise RuntimeError(f"no handler for action {type(action).__name__}")
    if not isinstance(action, _SELF_IDEMPOTENT):
        key = f"{run.run_id}/{run.rule.actions.index(action)}"
        first = await services.db.write(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO effects (key, time) VALUES (?, datetime('now'))", (key,)).rowcount == 1)
        if not first:  # recorded before it was done: at most once, never twice
            return ActionOutcome(f"{type(action).__name__} already done before a restart")
    return await handler(action, run, services)


def plain_args_problem(args: tuple[str, ...]) -> str | None:
    """Why untyped command words may not go to a script, or None."""
    if len(args) > MAX_ARGS:
        return f"too many arguments ({len(args)}; at most {MAX_ARGS})"
    for arg in args:
        problem = argument_problem(arg, f"argument '{arg}'")  # the specific reasons first: they say what to change
        if problem is not None:
            return problem
        if not _PLAIN_ARG.fullmatch(arg):
            return (f"argument {arg!r} is not allowed: use letters, digits and . _ : / = @ + , - "
                    "(not starting with a symbol, at most 128 characters)")
    return None


def audience_for(target: str, services: Services) -> Audience | None:
    """A team from the config or a rule file, or `@person`."""
    if target.startswith("@"):
        return Audience(target, members=(target[1:],))
    team = services.config.teams.get(target)
    if team is not None:
        return Audience(target, tuple(team.members), team_targets(team.chat_rooms, team.targets))
    return services.declared_teams.get(target)


def team_targets(chat_rooms: Iterable[str], targets: Iterable[str]) -> tuple[Conversation, ...]:
    """A configured team's conversations: its Herald-chat rooms and its `platform:chat` targets."""
    found = [Conversation(platform="chat", chat=f"#{room.removeprefix('#')}") for room in chat_rooms]
    for address in targets:
        platform, _, chat = address.partition(":")
        found.append(Conversation(platform=platform, chat=chat))
    return tuple(found)


@handles(NotifyAction)
async def notify(action: NotifyAction, run: RuleRun, services: Services) -> ActionOutcome:
    event, data = run.event, run.event.data
    audience = audience_for(action.team, services)
    if audience is None:  # the compiler checks teams; a config reload could still remove one
        return ActionOutcome(f"team {action.team} is not configured")
    fingerprint = data.fingerprint if isinstance(data, AlertData) else None
    if fingerprint is not None:
        until = await services.alerts.muted_until(fingerprint)
        if until is not None:
            return ActionOutcome(f"muted until {until.isoformat(timespec='minutes')}")
    buttons: tuple[Button, ...] = ()
    if action.buttons:
        specs = tuple((b.name, b.arg) for b in (action.button_list or DEFAULT_BUTTONS))
        buttons = await services.alerts.make_buttons(event_id=event.id, rule=run.rule.name,
                                                     fingerprint=fingerprint, specs=specs)
        if fingerprint is not None:
            services.board.offered(fingerprint, buttons)
    text = render_template(action.template, run.fields) if action.template else summarize(event)
    alert = data if isinstance(data, AlertData) else None
    note = Notification(event_id=event.id, rule=run.rule.name, text=text, buttons=buttons,
                        severity=alert.severity if alert else None, alert=fingerprint,
                        links=alert_links(alert) if alert else (), line=alert_line(alert) if alert else None)
    reach = await services.delivery.notify(audience, note, key=f"notify/{run.run_id}/{run.rule.actions.index(action)}")
    return ActionOutcome(f"notified {action.team} ({reach})")


@handles(ReplyAction)
async def reply(action: ReplyAction, run: RuleRun, services: Services) -> ActionOutcome:
    sent = await services.delivery.reply(run.event.reply_to, Text(render_template(action.template, run.fields)),
                                         key=f"reply/{run.run_id}/{run.rule.actions.index(action)}")
    return ActionOutcome("replied" if sent else "nobody to reply to")


@handles(RunAction)
async def run_script(action: RunAction, run: RuleRun, services: Services) -> ActionOutcome:
    event = run.event
    if action.args:
        args = [render_template(template, run.fields) for template in action.args]
    else:  # no `args`: the command's own words (already checked to be plain in VALIDATE_PARAMS)
        args = list(event.data.args) if isinstance(event.data, CommandData) and not run.rule.params else []
    task = TaskRecord(
        task_id=derived_id(event.time, "task", run.run_id, str(run.rule.actions.index(action))),
        platform=event.reply_to.platform if event.reply_to else event.source,
        command=event.data.safe_text if isinstance(event.data, CommandData) else summarize(event),
        params=TaskParams(script=action.script, args=args,
                          timeout=action.timeout_s or services.config.sandbox.default_timeout_s,
                          memory_bytes=action.memory_bytes, network=action.network,  # type: ignore[arg-type]
                          network_allow=list(action.network_allow),
                          retries=action.retries,
                          backoff_s=action.backoff_s or DEFAULT_BACKOFF_S),
        run_id=run.run_id, rule=run.rule.name, event_id=event.id,
        requested_by=event.actor.principal if event.actor else None, reply_to=event.reply_to,
        depth=event.cause.depth,
    )
    if not await services.tasks.enqueue(task):  # a replay after a crash: say how the task really is
        earlier = await services.tasks.get(task.task_id)
        status = earlier.status if earlier is not None else "queued"
        return ActionOutcome(f"task {task.task_id} already {status} before a restart", task_id=task.task_id)
    await services.audit_publish("task.queued", who(event), task=task.task_id, script=action.script,
                                 args=args, rule=run.rule.name)
    unavailable = ("; the task queue is unavailable right now, it starts when the queue is back"
                   if services.tasks.outage else "")
    return ActionOutcome(f"task {task.task_id} queued: {action.script}{unavailable}", task_id=task.task_id)


@handles(EmitAction)
async def emit(action: EmitAction, run: RuleRun, services: Services) -> ActionOutcome:
    parent = run.event
    if parent.cause.depth + 1 > MAX_EMIT_DEPTH:
        await services.audit_publish("event.dropped", run.rule.name, event=action.event, parent=parent.id,
                                     reason=f"emit depth above {MAX_EMIT_DEPTH}")
        return ActionOutcome(f"not emitted: {action.event} would be {MAX_EMIT_DEPTH + 1} events deep (a loop?)")
    prefix = f"{parent.kind}."
    values = {k[len(prefix):]: v for k, v in run.fields.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
    child = Event(id=derived_id(parent.time, "emit", run.run_id, str(run.rule.actions.index(action))),
                  source=f"rule:{run.rule.name}", actor=parent.actor, reply_to=parent.reply_to,
                  data=EmittedData(name=action.event, values=_json_safe(values)),
                  cause=Cause(root=parent.cause.root or parent.id, parent=parent.id, depth=parent.cause.depth + 1))
    await services.submit([child])
    return ActionOutcome(f"emitted {action.event}")


def _json_safe(values: dict[str, object]) -> dict[str, object]:
    return {k: v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in values.items()}

