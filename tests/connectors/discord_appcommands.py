"""The fake Discord's application commands: what a bulk overwrite must look like, and what a person can pick.

From https://discord.com/developers/docs/interactions/application-commands (Application Command Object):
  "CHAT_INPUT command names and command option names must match the following regex
  ^[-_\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$ with the unicode flag set. If there is a lowercase variant of any
  letters used, you must use those."
  "name | string | Name of command, 1-32 characters"; "description | string | Description for CHAT_INPUT commands,
  1-100 characters"; "options? | array of application command option | Parameters for the command, max of 25".
  Options: `type` 3 STRING, 4 INTEGER ("Any integer between -2^53 and 2^53"), 10 NUMBER; `name` 1-32 characters,
  `description` 1-100 characters, `required?` (default false), `choices?` "Choices for STRING, INTEGER, and NUMBER
  types for the user to pick from, max 25", each choice a `name` (1-100 characters) and a `value` of the option's
  type (a string of up to 100 characters for STRING). "Required options must be listed before optional options."
  Bulk overwrite (`PUT /applications/{application.id}/commands`, and `/applications/{application.id}/guilds/
  {guild.id}/commands` for one guild) "Takes a list of application commands, overwriting the existing [...] command
  list for this application" and returns 200 with the list of application command objects: commands missing from the
  list are deleted, a command whose name (and type) matches an existing one is updated and keeps its id, the rest
  are created. Commands in one scope have unique names; an application has at most 100 CHAT_INPUT commands in a scope.
  A body that breaks these rules is refused whole: 400 {"code": 50035, "errors": {...}, "message": "Invalid Form
  Body"}, the `errors` object following the body's shape down to the field, whose `_errors` list holds
  {"code": ..., "message": ...}.

When a person runs a command, the client has already checked what Discord can check: every required option is there,
a choice is one of the choices, an INTEGER is an integer. The interaction's `data` is {"id", "name", "type": 1,
"options": [{"name", "type", "value"}]}, the options in the order they were filled in. `picked_options` plays that
client: it refuses (AssertionError) what the Discord client would not let a person send.
"""

from __future__ import annotations

import re
from typing import Any

STRING, INTEGER, NUMBER = 3, 4, 10
NAME = re.compile(r"[-_\w]{1,32}")  # \w: Unicode letters, digits and '_' (the documented classes, near enough)
MAX_COMMANDS, MAX_OPTIONS, MAX_CHOICES = 100, 25, 25
INTEGER_LIMIT = 2 ** 53


def form_errors(body: Any) -> dict[str, Any] | None:
    """Discord's `errors` object for a bulk-overwrite body it would refuse, or None if it takes it."""
    if not isinstance(body, list):
        return {"_errors": [_e("MODEL_TYPE_CONVERT", "Must be an array.")]}
    if len(body) > MAX_COMMANDS:
        return {"_errors": [_e("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_COMMANDS} or fewer in length.")]}
    errors: dict[str, Any] = {}
    seen: set[str] = set()
    for index, command in enumerate(body):
        problems = _command_errors(command)
        if not problems and command["name"] in seen:
            problems = {"name": {"_errors": [_e("APPLICATION_COMMANDS_DUPLICATE_NAME",
                                                f"Application command names must be unique: {command['name']}")]}}
        if problems:
            errors[str(index)] = problems
        elif isinstance(command, dict):
            seen.add(command["name"])
    return errors or None


def _command_errors(command: Any) -> dict[str, Any]:
    if not isinstance(command, dict):
        return {"_errors": [_e("MODEL_TYPE_CONVERT", "Must be an object.")]}
    errors: dict[str, Any] = {}
    if command.get("type", 1) == 1:
        _name(command.get("name"), errors, "APPLICATION_COMMAND_INVALID_NAME")
        _length(command.get("description"), 1, 100, "description", errors)
    options = command.get("options") or []
    if len(options) > MAX_OPTIONS:
        errors["options"] = {"_errors": [_e("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_OPTIONS} or fewer in length.")]}
        return errors
    optional_seen = False
    names: set[str] = set()
    for index, option in enumerate(options):
        problems = _option_errors(option)
        if not problems and option["name"] in names:
            problems = {"name": {"_errors": [_e("APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                                "Option names must be unique")]}}
        if not problems and option.get("required") and optional_seen:
            problems = {"required": {"_errors": [_e("APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                                    "Required options must be placed before non-required options")]}}
        if problems:
            errors.setdefault("options", {})[str(index)] = problems
            continue
        names.add(option["name"])
        optional_seen = optional_seen or not option.get("required", False)
    return errors


def _option_errors(option: Any) -> dict[str, Any]:
    if not isinstance(option, dict):
        return {"_errors": [_e("MODEL_TYPE_CONVERT", "Must be an object.")]}
    errors: dict[str, Any] = {}
    _name(option.get("name"), errors, "APPLICATION_COMMAND_INVALID_NAME")
    _length(option.get("description"), 1, 100, "description", errors)
    kind = option.get("type")
    if kind not in range(1, 12):
        errors["type"] = {"_errors": [_e("BASE_TYPE_CHOICES", f"Value must be one of {list(range(1, 12))}.")]}
    choices = option.get("choices")
    if choices is not None:
        if kind not in (STRING, INTEGER, NUMBER):
            errors["choices"] = {"_errors": [_e("APPLICATION_COMMAND_OPTION_CHOICES_INVALID",
                                                "Choices are only for STRING, INTEGER and NUMBER options")]}
        elif len(choices) > MAX_CHOICES:
            errors["choices"] = {"_errors": [_e("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")]}
        else:
            for index, choice in enumerate(choices):
                problems: dict[str, Any] = {}
                _length(choice.get("name"), 1, 100, "name", problems)
                if not _of_type(choice.get("value"), kind) or (kind == STRING and len(choice["value"]) > 100):
                    problems["value"] = {"_errors": [_e("BASE_TYPE_BAD_TYPE", "Choice value of the wrong type")]}
                if problems:
                    errors.setdefault("choices", {})[str(index)] = problems
    return errors


def _name(name: Any, errors: dict[str, Any], code: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name != name.lower():
        errors["name"] = {"_errors": [_e(code, "Command name is invalid")]}


def _length(text: Any, low: int, high: int, field: str, errors: dict[str, Any]) -> None:
    if not isinstance(text, str) or not low <= len(text) <= high:
        errors[field] = {"_errors": [_e("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")]}


def _of_type(value: Any, kind: int) -> bool:
    if kind == STRING:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool) and -INTEGER_LIMIT <= value <= INTEGER_LIMIT
    return isinstance(value, int | float) and not isinstance(value, bool)


def _e(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def picked_options(command: dict[str, Any], picked: dict[str, Any]) -> list[dict[str, Any]]:
    """The interaction's `options` for what a person picked in the client, checked as the client checks them."""
    declared = {o["name"]: o for o in command.get("options") or []}
    unknown = set(picked) - set(declared)
    assert not unknown, f"/{command['name']} has no option {sorted(unknown)} (it has {sorted(declared)})"
    for name, option in declared.items():
        if option.get("required") and name not in picked:
            raise AssertionError(f"the client does not send /{command['name']} without its required option {name}")
    options = []
    for name, value in picked.items():
        option = declared[name]
        assert _of_type(value, option["type"]), f"{name}: the client takes no {value!r} for type {option['type']}"
        if option.get("choices") is not None:
            assert value in [c["value"] for c in option["choices"]], f"{name}: {value!r} is not one of the choices"
        options.append({"name": name, "type": option["type"], "value": value})
    return options
