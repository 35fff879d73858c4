"""Text to AST: the lark parser for `grammar.lark`, its indentation postlexer, and syntax-error recovery.

A file is cut into *chunks*: a chunk starts at each line that begins in column 1 with something other than a
comment, and runs until the next such line. Every rule starts a chunk, and the lines of a block are indented,
so each chunk holds one rule (or one broken piece of text). The file is first parsed in one go (one parse is
much cheaper than one per rule); only when that meets a syntax error is it parsed chunk by chunk, which lets one
bad rule produce one diagnostic while the rules around it still parse and still get their semantic checks; that
is how several syntax errors in one file are all reported.

The parser builds the AST while it parses (`dsl.builder.AstBuilder` is its inline transformer): no parse tree,
and no `propagate_positions`, since every span comes from the tokens themselves. Its contextual lexer is lark's
with a quicker loop (`dsl.lexer`), and a text is first run through a quicker loop over lark's LALR table
(`dsl.lalr`); lark's own `Lark.parse` takes over at the first sign of a syntax error, so errors are lark's.

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
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import lark.lexer as lark_lexer
import lark.load_grammar as lark_load_grammar
from lark import Lark, Token, UnexpectedInput
from lark.lark import PostLex

from dsl.ast import Rule, RuleFile, Span, TeamDecl
from dsl.builder import AstBuilder
from dsl.diagnostics import Diagnostic
from dsl.lalr import NoQuickParse, QuickLALR
from dsl.lexer import QuickContextualLexer
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


def build_parser(*, strict: bool = False, quick_lexer: bool = True) -> Lark:
    """A new lark parser for `grammar.lark` that builds the AST as it parses (`strict=True` needs `interegular`;
    the tests use it). Its `options.transformer` is the `AstBuilder` the parse results are collected in;
    `quick_lexer=False` keeps lark's own contextual lexer loop (the tests compare the two)."""
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
            transformer=AstBuilder(),
            maybe_placeholders=False,
            strict=strict,
            _plugins={"ContextualLexer": QuickContextualLexer} if quick_lexer else {},
        )
    finally:
        lark_lexer.has_interegular = saved


@functools.cache
def _parser() -> Lark:
    return build_parser()


@functools.cache
def _quick_lalr() -> QuickLALR | None:
    return QuickLALR.for_parser(_parser())


# The parser's AstBuilder holds the results of the parse under way, so parses take turns.
_PARSING = threading.Lock()


def release_parser() -> None:
    """Let go of this process's parser (about 2-3 MiB: lark's grammar, LALR table, contextual lexers and their
    regular expressions); the next parse builds it again (~0.15 s). For a long-running process that parses at
    start and then seldom: `herald run` after its start-up compile."""
    with _PARSING:
        _quick_lalr.cache_clear()
        _parser.cache_clear()
        # lark keeps the parser of its own grammar language (for reading grammar.lark) on a function attribute,
        # ~0.2 MiB; it builds it again when it next reads a grammar. (A no-op if a lark version keeps it elsewhere.)
        if hasattr(lark_load_grammar._get_parser, "cache"):
            del lark_load_grammar._get_parser.cache


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
    return _parse(text, path, one_by_one=False)


def parse_chunk_by_chunk(text: str, path: str) -> tuple[RuleFile, list[Diagnostic]]:
    """What `parse_recovering` returns, from one parse per chunk: the slow reference the tests hold it to."""
    return _parse(text, path, one_by_one=True)


def _parse(text: str, path: str, *, one_by_one: bool) -> tuple[RuleFile, list[Diagnostic]]:
    text = text.removeprefix("\ufeff")  # editors hide a byte-order mark; so do columns
    lark = _parser()
    builder = lark.options.transformer
    assert isinstance(builder, AstBuilder)
    with _PARSING:
        try:
            done = None if one_by_one else _parse_at_once(builder, text, path)
            if isinstance(done, tuple):
                items, diags = done
            else:  # a syntax error (what the parse completed before it is in the builder), or not tried
                chunks = _chunks(text)
                items, diags = _parse_file(lark, builder, chunks, path, one_by_one=one_by_one, tried=done is False)
        finally:
            builder.begin("", 0)  # let go of the results
    rules = tuple(item for item in items if isinstance(item, Rule))
    teams = tuple(item for item in items if isinstance(item, TeamDecl))
    return RuleFile(path=path, rules=rules, teams=teams), diags


# The first line with something on it other than a comment: where the first chunk starts.
_FIRST_CODE = re.compile(r"^[^\S\n]*[^\s#]", re.MULTILINE)


def _parse_at_once(
    builder: AstBuilder, text: str, path: str
) -> tuple[list[Rule | TeamDecl], list[Diagnostic]] | bool | None:
    """The whole text in one quick parse when it has no syntax error (the usual case, and no chunks needed:
    the text from the first chunk on is what `_source(chunks)` joins). False: it met a syntax error, and what
    it completed before is in the builder; None: not tried (no quick loop, nothing to parse, indented start)."""
    quick = _quick_lalr()
    first = _FIRST_CODE.search(text)
    if quick is None or first is None or first.end() - first.start() > 1:
        return None
    source = text[first.start() :]
    builder.begin(path, text.count("\n", 0, first.start()))
    try:
        quick.parse(source if source.endswith("\n") else source + "\n")
    except NoQuickParse:
        return False
    return builder.items, builder.diagnostics


def _parse_file(
    lark: Lark, builder: AstBuilder, chunks: list[_Chunk], path: str, *, one_by_one: bool, tried: bool = False
) -> tuple[list[Rule | TeamDecl], list[Diagnostic]]:
    """The items and diagnostics of all chunks: as many chunks in one parse as parse without an error.

    One parse of many chunks gives what parsing them one by one gives: the chunks' lines are consecutive and
    each chunk holds whole items (a chunk starts at a line in column 1, which only an item can start), so the
    one token stream is the chunks' streams one after the other and the parse reduces the same items. At a
    syntax error, the items completed before the chunk of the last of them are kept, the chunks from there on
    are parsed one by one by lark's parser up to the broken one (which gets its diagnostic from lark's error),
    and one parse takes the rest. `tried`: the builder holds a parse of all chunks that met a syntax error.
    """
    items: list[Rule | TeamDecl] = []
    diags: list[Diagnostic] = []
    index = 0
    if chunks and chunks[0].lines[0][:1].isspace():
        diags.append(_indented_start(path, chunks[0].first, chunks[0].lines[0]))
        index = 1
    while one_by_one and index < len(chunks):
        index = _parse_one_by_one(lark, builder, chunks, index, path, items, diags)
    quick = _quick_lalr()
    while index < len(chunks):
        if not tried:
            builder.begin(path, chunks[index].first - 1)
            if _parses(lark, quick, _source(chunks[index:])):
                items.extend(builder.items)
                diags.extend(builder.diagnostics)
                break
        tried = False
        resume = index
        if builder.items:
            last = builder.items[-1].span.line
            resume = max(i for i in range(index, len(chunks)) if chunks[i].first <= last)
            kept_before = chunks[resume].first
            items.extend(item for item in builder.items if item.span.line < kept_before)
            diags.extend(diag for diag in builder.diagnostics if diag.span.line < kept_before)
        index = _parse_one_by_one(lark, builder, chunks, resume, path, items, diags)
    return items, diags


def _parses(lark: Lark, quick: QuickLALR | None, source: str) -> bool:
    """Whether `source` parses; up to where it does not, the builder holds what either parser completed (the
    quick loop stops at the token where lark's parser would raise, having made the same reductions)."""
    try:
        if quick is not None:
            quick.parse(source)
        else:
            lark.parse(source)
    except (NoQuickParse, UnexpectedInput):
        return False
    return True


def _parse_one_by_one(
    lark: Lark,
    builder: AstBuilder,
    chunks: list[_Chunk],
    index: int,
    path: str,
    items: list[Rule | TeamDecl],
    diags: list[Diagnostic],
) -> int:
    """Parse chunks alone from `index` up to and including the first that fails; the index after it."""
    while index < len(chunks):
        chunk = chunks[index]
        builder.begin(path, chunk.first - 1)
        try:
            lark.parse(_source([chunk]))
        except UnexpectedInput as err:
            following = _next_line(chunks[index + 1]) if index + 1 < len(chunks) else None
            diags.append(
                describe_syntax_error(
                    err,
                    path=path,
                    lines=chunk.lines,
                    offset=chunk.first - 1,
                    next_line=following,
                    after_rule=index > 0,
                )
            )
            return index + 1
        items.extend(builder.items)
        diags.extend(builder.diagnostics)
        index += 1
    return index


def _source(chunks: list[_Chunk]) -> str:
    source = "\n".join(line for chunk in chunks for line in chunk.lines)
    return source if source.endswith("\n") else source + "\n"


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
