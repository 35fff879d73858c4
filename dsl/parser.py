"""Text to AST: the lark parser for `grammar.lark`, its indentation postlexer, and syntax-error recovery.

A file is cut into *chunks* before parsing: a chunk starts at each line that begins in column 1 with something
other than a comment, and runs until the next such line. Every rule starts a chunk, and the lines of a block
are indented, so each chunk holds one rule (or one broken piece of text). Parsing chunk by chunk lets one bad
rule produce one diagnostic while the rules around it still parse and still get their semantic checks; that is
how several syntax errors in one file are all reported.

The parser is built once, lazily, with `strict=False`: `strict=True` needs `interegular`, which is not a
dependency, and only re-checks a grammar that does not change at run time. `tests/dsl/test_dsl_grammar.py`
runs lark's strict LALR analysis, so a shift/reduce conflict fails the tests, and builds with full
`strict=True` where `interegular` is installed. lark's `cache=True` is not used either: it writes to and
unpickles from a predictable file in the shared temp folder (which another local user can plant), all to save
about 15 ms once per process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import lark.lexer as lark_lexer
from lark import Lark, Token, UnexpectedInput
from lark.lark import PostLex

from dsl.ast import RuleFile, Span
from dsl.builder import build_rules
from dsl.diagnostics import Diagnostic
from dsl.syntax_errors import NextLine, describe_syntax_error

_TAB_WIDTH = 8


class _Indenter(PostLex):
    """Turn the indentation after each line end into `_INDENT` / `_DEDENT`, never raising.

    Unlike lark's own `Indenter`, a dedent to a level that was never opened does not raise from inside the
    token stream: it closes the open levels and opens a new one, and the grammar then reports "unexpected
    indentation" at that line like any other syntax error.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        levels = [0]
        line = 1
        for token in stream:
            yield token
            if token.type != "_NL" or "\n" not in token:
                continue
            indent = token.rsplit("\n", 1)[1]
            width = len(indent.expandtabs(_TAB_WIDTH))
            line = token.end_line if token.end_line is not None else line
            if width > levels[-1]:
                levels.append(width)
                yield _marker("_INDENT", indent, line)
                continue
            while width < levels[-1]:
                levels.pop()
                yield _marker("_DEDENT", "", line)
            if width != levels[-1]:
                levels.append(width)
                yield _marker("_INDENT", indent, line)
        while len(levels) > 1:
            levels.pop()
            yield _marker("_DEDENT", "", line)


def _marker(kind: str, indent: str, line: int) -> Token:
    """An `_INDENT`/`_DEDENT` token over the indentation of `line`, where an error about it should point."""
    return Token(kind, indent, line=line, column=1, end_line=line, end_column=len(indent) + 1)


def build_parser(*, strict: bool = False) -> Lark:
    """A new lark parser for `grammar.lark` (`strict=True` needs `interegular`; the tests use it)."""
    grammar = resources.files("dsl").joinpath("grammar.lark").read_text(encoding="utf-8")
    # With interegular installed, lark checks every lexer state's terminals for collisions even when not strict:
    # about a second per process for this grammar. The tests build with strict=True, so the check still runs
    # there; the everyday parser skips it. (Built once per process, under functools.cache.)
    saved = lark_lexer.has_interegular
    if not strict:
        lark_lexer.has_interegular = False
    try:
        return Lark(
            grammar,
            parser="lalr",
            lexer="contextual",
            postlex=_Indenter(),
            propagate_positions=True,
            maybe_placeholders=False,
            strict=strict,
        )
    finally:
        lark_lexer.has_interegular = saved


@functools.cache
def _parser() -> Lark:
    return build_parser()


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Consecutive lines of a file from line `first` (1-based): a rule, or text that failed to be one."""

    first: int
    lines: list[str]


_STARTS_CHUNK = re.compile(r"[^\s#]")
_FIRST_WORD = re.compile(r"[^\s#]+")


def _chunks(text: str) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if _STARTS_CHUNK.match(line) or (not chunks and line.strip() and not line.lstrip().startswith("#")):
            chunks.append(_Chunk(number, [line]))
        elif chunks:
            chunks[-1].lines.append(line)
    return chunks


def parse_recovering(text: str, path: str) -> tuple[RuleFile, list[Diagnostic]]:
    """Parse every rule that can be parsed; return them with a diagnostic for each chunk that could not."""
    rules = []
    teams = []
    diags: list[Diagnostic] = []
    chunks = _chunks(text.removeprefix("\ufeff"))  # editors hide a byte-order mark; so do columns
    for index, chunk in enumerate(chunks):
        offset = chunk.first - 1
        first_line = chunk.lines[0]
        if first_line[:1].isspace():
            diags.append(_indented_start(path, chunk.first, first_line))
            continue
        source = "\n".join(chunk.lines)
        if not source.endswith("\n"):
            source += "\n"
        try:
            tree = _parser().parse(source)
        except UnexpectedInput as err:
            following = _next_line(chunks[index + 1]) if index + 1 < len(chunks) else None
            diags.append(
                describe_syntax_error(
                    err,
                    path=path,
                    lines=chunk.lines,
                    offset=offset,
                    next_line=following,
                    after_rule=index > 0,
                )
            )
            continue
        built, declared, problems = build_rules(tree, path=path, line_offset=offset)
        rules.extend(built)
        teams.extend(declared)
        diags.extend(problems)
    return RuleFile(path=path, rules=tuple(rules), teams=tuple(teams)), diags


def parse(text: str, path: str) -> tuple[RuleFile | None, list[Diagnostic]]:
    """Parse one file; the `RuleFile` is None when there is any syntax error (all of them are returned)."""
    rule_file, diags = parse_recovering(text, path)
    if any(d.severity == "error" for d in diags):
        return None, diags
    return rule_file, diags


def _next_line(chunk: _Chunk) -> NextLine:
    word = _FIRST_WORD.match(chunk.lines[0])
    text = word.group(0) if word else chunk.lines[0]
    return NextLine(line=chunk.first, word=text)


def _indented_start(path: str, number: int, line: str) -> Diagnostic:
    start = len(line) - len(line.lstrip())
    return Diagnostic(
        Span(path, number, 1, number, start + 1),
        "unexpected indentation: a rule starts in the first column",
        hint="only the lines inside a 'rule <name>:' block are indented",
    )
