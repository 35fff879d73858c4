"""Diagnostics: what is wrong, where, and how it reads on a terminal.

Every problem the compiler finds, syntax or meaning, becomes a `Diagnostic`; nothing is raised for bad rules.
`render` prints one the way a person reads it:

    rules/ops.rules:12:24: expected a duration such as 30s, 10m or 1h after 'timeout', found 'soon'
       run backup.sh sandboxed timeout soon
                                       ^^^^

The source line is shown without its own indentation (so block lines and one-liners line up alike), and the
carets sit under the whole span (its first line, when it covers several).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dsl.ast import Span
from dsl.frozen import quick_init

_SHOW_INDENT = "   "


@quick_init
@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in the rules; `severity` is "error" (blocks the compile) or "warning"."""

    span: Span
    message: str
    severity: str = "error"
    hint: str | None = None


def render(diag: Diagnostic, source_text: str) -> str:
    """`path:line:col: message`, the source line, carets under the span, and the hint if there is one."""
    span = diag.span
    label = "" if diag.severity == "error" else f"{diag.severity}: "
    out = [f"{span.path}:{span.line}:{span.col}: {label}{diag.message}"]
    lines = source_text.splitlines()
    if 1 <= span.line <= len(lines):
        raw = lines[span.line - 1].replace("\t", " ")
        shown = raw.lstrip(" ")
        cut = len(raw) - len(shown)
        start = max(span.col - 1 - cut, 0)
        end = span.end_col - 1 - cut if span.end_line == span.line else len(shown)
        width = max(end - start, 1)
        out.append(f"{_SHOW_INDENT}{shown}".rstrip())
        out.append(f"{_SHOW_INDENT}{' ' * start}{'^' * width}")
    if diag.hint:
        out.append(f"{_SHOW_INDENT}hint: {diag.hint}")
    return "\n".join(out)


def render_many(diags: Iterable[Diagnostic], sources: dict[str, str] | None = None) -> str:
    """Several diagnostics, separated by blank lines; a path missing from `sources` shows no source."""
    sources = sources or {}
    return "\n\n".join(render(d, sources.get(d.span.path, "")) for d in diags)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a near-miss `word` (a typo), or None when nothing is close enough to suggest."""
    import difflib  # here, not at the top: only a near-miss needs it, never an engine whose rules compile

    options = sorted(set(choices))
    by_lower = {c.lower(): c for c in options}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def join_words(words: list[str], last: str = "or") -> str:
    """`a`, `a or b`, `a, b or c`: a list as a sentence says it."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"
