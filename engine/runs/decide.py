"""The decisions a rule run makes before anything happens, as pure functions: the fields a command adds, whether the
caller may run the rule (CHECK_PERMISSION) and whether its arguments fit (VALIDATE_PARAMS).

The runtime and the dry run (`herald test`) both call these, so a dry run says exactly what the engine would do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from dsl import CompiledRule, EventGraph
from engine.core.events import CommandData, Event
from engine.runs.actions import plain_args_problem

RolesOf = Callable[[str | None], Collection[str]]


def command_fields(event: Event, data: CommandData, graph: EventGraph) -> dict[str, object]:
    """`command.user` and the typed arguments, so conditions and templates can use them."""
    extra: dict[str, object] = {}
    if event.actor is not None and event.actor.principal is not None:
        extra["command.user"] = event.actor.principal
    rules = graph.commands().get(data.name, ())
    if rules:  # every rule of one command has the same argument spec (a compile check)
        bound = rules[0].bind_args(data.args)
        if not isinstance(bound, str):
            extra.update({f"command.{name}": value for name, value in bound.items()})
    return extra


def refusal(event: Event, rule: CompiledRule, roles_of: RolesOf) -> str | None:
    """Deny by default: a command, or any rule that requires a role, needs a known person with the roles."""
    is_command = isinstance(event.data, CommandData)
    if not is_command and not rule.required_roles:
        return None
    what = f"/{event.data.name}" if isinstance(event.data, CommandData) else f"rule {rule.name}"
    principal = event.actor.principal if event.actor else None
    if principal is None:
        return (f"{what} needs an account linked to a person: ask an admin for a token "
                "(`herald identity link NAME`), then send /link TOKEN")
    roles = roles_of(principal)
    missing = [role for role in rule.required_roles if role not in roles]
    if missing:
        return f"{what} requires role {', '.join(missing)}, which {principal} does not have"
    return None


def invalid_params(event: Event, rule: CompiledRule) -> tuple[str | None, dict[str, object]]:
    """(why the arguments are refused, or None; the fields the bound arguments add)."""
    data = event.data
    if not isinstance(data, CommandData):
        return None, {}
    if not rule.params:  # untyped: the words go to a script as they are, so they must be plain
        return plain_args_problem(data.args), {}
    bound = rule.bind_args(data.args)
    if isinstance(bound, str):
        return bound, {}
    return None, {f"command.{name}": value for name, value in bound.items()}
