"""Typed command arguments: the spec a command declares, and binding what a chat user typed to it.

`bind_args(params, args)` is pure and returns either a dict (argument name -> typed value) or a message that
says, in the user's words, what is wrong. Types: word (one word), text (the rest of the line), int, duration
(to seconds), choice (one of the listed words), user (`@name` or `name`, to `name`), option (a word that may start
with '-'). Optional arguments take their default, or are absent when they have none (missing is not empty).

Arguments end up in scripts' argument vectors, so what a chat user types may not steer the script beyond its value:
no argument starts with '-' (it would be read as an option, `-rf`, `--output=/etc/passwd`) unless its type says
options are expected (`option`, or a negative `int`), and none holds '..' as a path segment (`a/../../etc/passwd`).
`argument_problem` is that policy, shared with untyped arguments (engine.runs.actions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dsl.frozen import quick_init
from dsl.values import duration_seconds, is_duration, is_int

BoundArgs = dict[str, object]
# Where a path may start or continue inside one word: after '/', after '\\' (tools that accept both), and after '='
# or ':' (`--output=../x`, `host:../x`).
_PATH_SEPARATORS = re.compile(r"[/\\=:]")


def argument_problem(value: str, what: str, *, options: bool = False) -> str | None:
    """Why `value` may not reach a script as an argument (`what` names it in the message), or None."""
    if value.startswith("-") and not options:
        return f"{what} may not start with '-' ('{value}' would reach the script as an option)"
    if any(segment == ".." for word in value.split() for segment in _PATH_SEPARATORS.split(word)):
        return f"{what} may not contain '..' as a path segment ('{value}' could reach outside a folder)"
    return None


@quick_init
@dataclass(frozen=True, slots=True)
class CommandParam:
    """One declared argument: `<name: type>`, or optional with a default (already typed)."""

    name: str
    type: str
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: object = None

    def usage(self) -> str:
        kind = "|".join(self.choices) if self.type == "choice" else self.type
        return f"[<{self.name}: {kind}>]" if self.optional else f"<{self.name}: {kind}>"


def convert(param: CommandParam, text: str) -> object | str:
    """`text` as a value of `param`'s type; on failure a `_Refusal` message (a str subclass)."""
    if param.type == "int":
        return int(text) if is_int(text) else _Refusal(f"{param.name} must be a whole number, not '{text}'")
    if param.type == "duration":
        if is_duration(text):
            return duration_seconds(text)
        return _Refusal(f"{param.name} must be a duration such as 30s, 10m or 1h, not '{text}'")
    if param.type == "choice":
        if text in param.choices:
            return text
        return _Refusal(f"{param.name} must be one of {', '.join(param.choices)}, not '{text}'")
    if param.type == "user":
        name = text[1:] if text.startswith("@") else text
        if not name:
            return _Refusal(f"{param.name} must name a person, such as @alice")
        text = name
    problem = argument_problem(text, param.name, options=param.type == "option")
    return text if problem is None else _Refusal(problem)


class _Refusal(str):
    """A conversion failure; a distinct type so a word argument that happens to be text is never mistaken."""


def bind_args(params: Sequence[CommandParam], args: Sequence[str], command: str = "") -> BoundArgs | str:
    """Bind the words after the command to `params`; a str result is why they do not fit.

    A command whose rules declare no arguments at all is untyped: its words are not bound here (the result is
    empty) and stay in `command.args`, as before typed arguments existed.
    """
    if not params:
        return {}
    usage = " ".join(["/" + command if command else "usage:", *(p.usage() for p in params)])
    bound: BoundArgs = {}
    words = list(args)
    for param in params:
        if param.type == "text":
            if words:
                value = convert(param, " ".join(words))
                if isinstance(value, _Refusal):
                    return str(value)
                bound[param.name] = value
                words = []
            elif not param.optional:
                return f"missing {param.name}; usage: {usage}"
            elif param.default is not None:
                bound[param.name] = param.default
            continue
        if not words:
            if not param.optional:
                return f"missing {param.name}; usage: {usage}"
            if param.default is not None:
                bound[param.name] = param.default
            continue
        value = convert(param, words.pop(0))
        if isinstance(value, _Refusal):
            return str(value)
        bound[param.name] = value
    if words:
        extra = " ".join(words)
        return f"unexpected '{extra}'; usage: {usage}"
    return bound
