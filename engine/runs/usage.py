"""`/help COMMAND`: how to call one command, read from the rules that define it: its arguments (name, type,
choices, default), who may run it, and the clauses it passes through before it runs."""

from __future__ import annotations

from dsl import EventGraph
from dsl.args import CommandParam
from dsl.describe import describe
from dsl.graph import CompiledRule
from dsl.plan import RequireRoleStage
from dsl.values import format_duration

# Herald's own commands: their usage line and what they do.
BUILTIN_USAGE = {
    "help": ("/help [COMMAND]", "list the commands you may run, or show how to call one"),
    "whoami": ("/whoami", "say which person this account acts for"),
    "link": ("/link TOKEN", "bind this account to a person with a one-time token from `herald identity link NAME`"),
    "cancel": ("/cancel TASK_ID", "stop a task you started (admins: any task); the first or the last characters "
                                  "of its id (at least 4) are enough when they name one task"),
    "task": ("/task TASK_ID", "how a task you started (admins: any task) is doing; its id may be shortened "
                                  "as for /cancel"),
}


def usage_line(command: str, params: tuple[CommandParam, ...]) -> str:
    """`/deploy <env: prod|staging> [<delay: duration = 0s>]`."""
    return " ".join([f"/{command}", *(_param(p) for p in params)])


def _param(param: CommandParam) -> str:
    kind = "|".join(param.choices) if param.type == "choice" else param.type
    if not param.optional:
        return f"<{param.name}: {kind}>"
    if param.default is None:
        return f"[<{param.name}: {kind}>]"
    default = param.default
    shown = format_duration(default) if param.type == "duration" and isinstance(default, int | float) else default
    return f"[<{param.name}: {kind} = {shown}>]"


def command_help(command: str, graph: EventGraph, principal: str | None, roles: frozenset[str]) -> str | None:
    """How to call `/command` and whether this caller may; None when no rule defines it."""
    rules = graph.commands().get(command)
    if not rules:
        return None
    lines = [_rule_help(command, rule, roles) for rule in rules]
    if principal is None:
        lines.append("This account is not linked to a person: send /link TOKEN first.")
    return "\n".join(lines)


def _rule_help(command: str, rule: CompiledRule, roles: frozenset[str]) -> str:
    needed = rule.required_roles
    if needed:
        missing = [role for role in needed if role not in roles]
        who = f"needs role {' and '.join(needed)}" + (f" (you lack {' and '.join(missing)})" if missing else
                                                        " (you may run it)")
    else:
        who = "anyone linked to a person may run it"
    steps = [describe(stage) for stage in rule.stages if not isinstance(stage, RequireRoleStage)]
    then = f"; before it runs: {', '.join(steps)}" if steps else ""
    return f"{usage_line(command, rule.params)}: {who}{then}."
