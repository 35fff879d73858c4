"""Templates: quoted text with `{field}` placeholders, checked at compile time and rendered when a rule runs.

`{{` and `}}` stand for literal braces. A placeholder names a field exactly as conditions do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dsl.fields import MISSING, getter

_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)+")


@dataclass(frozen=True, slots=True)
class Placeholder:
    """`{field}` at `offset` (0-based, in the unquoted text)."""

    field: str
    offset: int


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """A brace that is not a placeholder, at `offset` in the unquoted text."""

    message: str
    offset: int
    width: int


def placeholders(template: str) -> tuple[list[Placeholder], list[TemplateProblem]]:
    """The placeholders of `template`, and braces that are not one (a lone `{`, `{}` or `{not a field}`)."""
    found: list[Placeholder] = []
    problems: list[TemplateProblem] = []
    for match in _PIECE.finditer(template):
        piece = match.group(0)
        if piece in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            problems.append(TemplateProblem(f"a lone '{piece}'; write '{piece * 2}' for a brace", match.start(), 1))
        elif FIELD_NAME.fullmatch(name.strip()) is None:
            problems.append(
                TemplateProblem(
                    f"'{piece}' is not a field such as {{alert.service}}", match.start(), len(piece)
                )
            )
        else:
            found.append(Placeholder(name.strip(), match.start()))
    return found, problems


def render_template(template: str, fields: Mapping[str, object], *, missing: str = "") -> str:
    """`template` with each `{field}` replaced by its value in `fields` (`missing` for an absent field)."""

    def replace(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece == "{{":
            return "{"
        if piece == "}}":
            return "}"
        name = match.group(1)
        if name is None:
            return piece
        value = getter(name.strip())(fields)
        if value is MISSING or value is None:
            return missing
        if isinstance(value, tuple | list):
            return " ".join(str(v) for v in value)
        return str(value)

    return _PIECE.sub(replace, template)
