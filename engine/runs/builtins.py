"""What Herald does by itself, whatever the rules say: the /help, /whoami and /link commands, the alert
buttons Acknowledge, Unacknowledge and Mute, and the Confirm button of `require confirmation` (engine.confirm)."""

from __future__ import annotations

from datetime import timedelta

from dsl import EventGraph
from dsl.checks import MUTE_MAX_S, MUTE_UNTIL_RESOLVED, mute_problem
from dsl.values import duration_seconds
from engine.core.events import ButtonData, CommandData, Event
from engine.delivery.delivery import HERALD_CHAT, person_chat
from engine.delivery.outlets import Text
from engine.intake import secrets
from engine.runs import confirm, escalation
from engine.runs.alerts import TOGGLES
from engine.runs.run import Services, who
from engine.runs.usage import BUILTIN_USAGE, command_help
from engine.tasks.record import TaskRecord

BUILTIN_COMMANDS = {
    "help": "list the commands you may run; /help COMMAND shows how to call one",
    "whoami": "say which person this account acts for",
    "link": "bind this account to a person with a one-time token from `herald identity link NAME`",
    "cancel": "stop a task you started (admins: any task): /cancel TASK_ID",
    "task": "how a task you started (admins: any task) is doing: /task TASK_ID",
}
# All an account that is not linked to a person may do.
UNLINKED_COMMANDS = frozenset({"help", "whoami", "link"})
# Buttons Herald gives a meaning to without any rule.
BUILTIN_BUTTONS = frozenset({*TOGGLES, confirm.BUTTON})
_NAMES = {"ack": "Acknowledge", "unack": "Unacknowledge", "mute": "Mute"}


async def run_builtin(event: Event, data: CommandData, graph: EventGraph, services: Services) -> None:
    if data.name == "help":
        text = help_text(event, graph, services, data.args[0] if data.args else None)
    elif data.name == "whoami":
        text = whoami(event, services)
    elif data.name == "cancel":
        text = await cancel(event, data, services)
    elif data.name == "task":
        text = await task_status(event, data, services)
    else:
        text = await link(event, data, services)
    await services.delivery.reply(event.reply_to, Text(text))


def help_text(event: Event, graph: EventGraph, services: Services, command: str | None = None) -> str:
    """The commands this caller may run (a rule allows them and the caller has the roles it requires), or with
    `command`, how to call that one."""
    principal = event.actor.principal if event.actor else None
    roles = services.directory.roles_of(principal)
    if command is not None:
        command = command.removeprefix("/")
        if command in BUILTIN_USAGE and (principal is not None or command in UNLINKED_COMMANDS):
            line, what = BUILTIN_USAGE[command]
            return f"{line}: {what}."
        usage = command_help(command, graph, principal, roles)
        if usage is not None:
            return usage
        return f"There is no command /{command}. {help_text(event, graph, services)}"
    allowed = {
        name for name, rules in graph.commands().items()
        if principal is not None and any(set(rule.required_roles) <= roles for rule in rules)
    }
    builtins = BUILTIN_COMMANDS if principal is not None else UNLINKED_COMMANDS
    return "You can run: " + ", ".join(f"/{name}" for name in sorted({*allowed, *builtins})) + "."


def whoami(event: Event, services: Services) -> str:
    if event.actor is None:
        return "This event has no sender."
    where = f"{event.actor.platform} account {event.actor.account}"
    principal = event.actor.principal
    if principal is None:
        return f"Your {where} is not linked to a person. Ask an admin for `herald identity link NAME`, " \
               "then send /link TOKEN."
    roles = ", ".join(sorted(services.directory.roles_of(principal))) or "none"
    return f"You are {principal} (roles: {roles}) on {where}."


async def link(event: Event, data: CommandData, services: Services) -> str:
    """Report what intake did: the token was redeemed as the command was journaled (engine/intake/secrets.py)."""
    settled = data.settled
    if event.actor is None or settled is None or (not settled.ok and settled.reason == secrets.USAGE):
        return secrets.USAGE + "."
    actor = event.actor
    if not settled.ok or settled.principal is None:
        await services.audit_publish("identity.link_refused", who(event), platform=actor.platform,
                                     account=actor.account, reason=settled.reason)
        return f"Link refused: {settled.reason}."
    principal = settled.principal
    await services.audit_publish("identity.linked", principal, platform=actor.platform, account=actor.account)
    roles = ", ".join(sorted(services.directory.roles_of(principal))) or "none"
    return f"Linked: this {actor.platform} account now acts for {principal} (roles: {roles})."


async def task_named(typed: str, services: Services) -> TaskRecord | str:
    """The task a person typed the id of (whole, or its unique start or end), or why there is not exactly one."""
    found = await services.tasks.find(typed)
    if isinstance(found, TaskRecord):
        return found
    if not found:
        return f"There is no task {typed!r}."
    return f"{typed!r} could be any of these tasks: {', '.join(found)}. Type more of its id."


def _may_touch(principal: str | None, task: TaskRecord, services: Services) -> bool:
    """Deny by default: only the person who asked for the task, or an admin."""
    return principal is not None and (principal == task.requested_by
                                      or "admin" in services.directory.roles_of(principal))


async def cancel(event: Event, data: CommandData, services: Services) -> str:
    if len(data.args) != 1:
        return "Usage: /cancel TASK_ID (the id in the task's progress messages, or its first or last characters)."
    principal = event.actor.principal if event.actor else None
    task = await task_named(data.args[0], services)
    if isinstance(task, str):
        return task
    if not _may_touch(principal, task, services):
        await services.audit_publish("task.cancel_denied", who(event), task=task.task_id)
        return "Denied: only the person who started a task, or an admin, may cancel it."
    assert services.cancel_task is not None and principal is not None
    return await services.cancel_task(task.task_id, principal)


async def task_status(event: Event, data: CommandData, services: Services) -> str:
    if len(data.args) != 1:
        return "Usage: /task TASK_ID (the id in the task's progress messages, or its first or last characters)."
    principal = event.actor.principal if event.actor else None
    task = await task_named(data.args[0], services)
    if isinstance(task, str):
        return task
    if not _may_touch(principal, task, services):
        return "Denied: only the person who started a task, or an admin, may see it."
    text = f"Task {task.task_id} ({task.params.script}, started by {task.requested_by or 'a rule'}): {task.status}"
    if task.attempts > 1:
        text += f", attempt {task.attempt} of {task.attempts}"
    if task.exit_code is not None:
        text += f", exit code {task.exit_code}"
    last = [line for line in (task.error or task.output).splitlines() if line.strip()][-3:]
    return text + "." + "".join(f"\n{line}" for line in last)


async def press_refusal(event: Event, graph: EventGraph, services: Services, now: float) -> str | None:
    """Why this person may not press this button, decided before the button is used up, so a press that is not
    allowed leaves it for the people who are (deny by default, as for commands):

    - Confirm: only the person the confirmation asks (engine.runs.confirm);
    - Acknowledge, Unacknowledge and Mute: a person with one of the config's `button_roles`, and the roles of every
      rule `on button ack|unack|mute require role R` that matches (rules may tighten the default, never loosen it).
    """
    data = event.data
    assert isinstance(data, ButtonData)
    principal = event.actor.principal if event.actor else None
    if data.action == confirm.BUTTON:
        return await confirm.press_refusal(services, data.arg or "", principal, now)
    if data.action not in TOGGLES or data.alert_fingerprint is None:
        return None  # a rule's own button: its rule's CHECK_PERMISSION decides
    what = _NAMES[data.action]
    if principal is None:
        return f"{what} needs an account linked to a person (`herald identity link NAME`, then /link TOKEN)"
    roles = services.directory.roles_of(principal)
    allowed = services.config.button_roles
    if not roles.intersection(allowed):
        return f"{what} needs role {' or '.join(allowed)}, which {principal} does not have"
    for rule in graph.match("button", event.fields()):
        missing = [role for role in rule.required_roles if role not in roles]
        if missing:
            return f"{what} requires role {', '.join(missing)} (rule {rule.name}), which {principal} does not have"
    if not await _addressed(event, data, principal, services):
        return f"{what}: this notification was not sent to {principal} (only its recipients may press its buttons)"
    return None


async def _addressed(event: Event, data: ButtonData, principal: str, services: Services) -> bool:
    """Whether the notification this button came with was sent to this person: to the conversation the press came
    from (a room it was posted in), to one of the person's own conversations on any platform, or to a room of
    Herald's chat (which everyone allowed to join rooms may be in)."""
    sent = await services.delivery.outbox.notifications_of(data.source_event)
    if not sent:
        return True  # sent before the outbox kept it, or pruned after a week: the roles above decide alone
    places = {(item.to.platform, item.to.chat) for item in sent}
    origin = event.reply_to
    if origin is not None and (origin.platform, origin.chat) in places:
        return True
    if (HERALD_CHAT, person_chat(principal)) in places or any(
            platform == HERALD_CHAT and chat.startswith("#") for platform, chat in places):
        return True
    return any(account in places for account in await services.directory.accounts_of(principal))


async def press(event: Event, data: ButtonData, services: Services) -> None:
    """Every press is audited; Acknowledge, Unacknowledge and Mute act on the alert the button came with, Confirm on
    the request it was sent for."""
    presser = who(event)
    await services.audit_publish("button.pressed", presser, event=event.id, button=data.action, arg=data.arg,
                                 alert=data.alert_fingerprint, source_event=data.source_event, rule=data.rule)
    if data.action == confirm.BUTTON:
        await confirm.pressed(event, data, services)
        return
    if data.alert_fingerprint is None or data.action not in TOGGLES:
        return  # rules `on button NAME` give it meaning
    if data.action == "ack":
        earlier = await services.alerts.acknowledge(data.alert_fingerprint, presser)
        text = f"Already acknowledged by {earlier}." if earlier else f"Acknowledged by {presser}."
        services.board.pressed(data.alert_fingerprint, "ack", acknowledged_by=earlier or presser)
        if earlier is None:  # everyone who got the alert sees it is taken, wherever they are
            await services.delivery.follow(data.alert_fingerprint, await services.alerts.status(
                data.alert_fingerprint))
    elif data.action == "unack":
        text = await unacknowledge(data.alert_fingerprint, presser, services)
    elif (problem := mute_problem(data.arg)) is None:  # the compiler checked it; the binding is signed
        until_resolved = data.arg == MUTE_UNTIL_RESOLVED
        seconds = MUTE_MAX_S if until_resolved else duration_seconds(data.arg or "")
        until = await services.alerts.mute(data.alert_fingerprint, presser, timedelta(seconds=seconds),
                                           until_resolved=until_resolved)
        text = (f"Muted by {presser} until the alert resolves (at the latest {until.isoformat(timespec='minutes')})."
                if until_resolved else f"Muted by {presser} until {until.isoformat(timespec='minutes')}.")
        if services.upstream is not None:
            text += await services.upstream.mirror(data.source_event, until, presser)
        services.board.pressed(data.alert_fingerprint, "mute", muted_until=until)
        await services.delivery.follow(data.alert_fingerprint, await services.alerts.status(data.alert_fingerprint))
    else:
        text = f"Not muted: {problem}."
    await services.delivery.reply(event.reply_to, Text(text))


async def unacknowledge(fingerprint: str, presser: str, services: Services) -> str:
    """Return an acknowledged alert to open: audited, every message edited (Acknowledge back), its escalation
    policies resumed (engine.runs.escalation.resume). An open alert is left as it is, and the answer says so."""
    earlier = await services.alerts.unacknowledge(fingerprint, presser)
    if earlier is None:
        return "Not acknowledged: the alert is open already, there is nothing to unacknowledge."
    await services.audit_publish("alert.unacknowledged", presser, alert=fingerprint, was=earlier)
    services.board.pressed(fingerprint, "unack", unacknowledged=True)
    await services.delivery.follow(fingerprint, await services.alerts.status(fingerprint))
    resumed = await escalation.resume(fingerprint, services)
    again = f" Its escalation resumes: {resumed}." if resumed else ""
    return f"Unacknowledged by {presser} (was acknowledged by {earlier}); the alert is open again.{again}"
