"""lark's syntax errors to diagnostics in plain words.

lark reports terminal names (`NAME`, `_NL`, `$END`); users never see those. Each terminal has a description
here ("a team name", "the end of the line", "'notify'"), expected alternatives are listed only when there are
a few, and a word that nearly matches an expected keyword gets "did you mean". A test in
`tests/dsl/test_dsl_grammar.py` fails if the grammar gains a terminal that has no description.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from lark import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dsl.ast import Span
from dsl.diagnostics import Diagnostic, did_you_mean, join_words

# Keyword terminals are named after their word; this order is the order alternatives are listed in.
KEYWORDS = (
    "on", "rule", "team", "alert", "command", "button", "task", "schedule", "event", "message",
    "firing", "resolved", "severity", "from", "label", "succeeded", "failed", "timed_out",
    "every", "day", "at", "cron", "in", "matching", "when", "and", "or", "not", "matches", "is", "set",
    "require", "role", "confirmation", "by", "another", "within", "dedupe", "for", "group", "most", "per",
    "check", "disk", "has", "free", "notify", "saying", "with", "buttons", "reply", "run", "sandboxed",
    "timeout", "retry", "times", "backoff", "memory", "network", "args", "emit", "silence", "escalate", "to",
    "after", "unless", "acknowledged", "until", "repeat", "missing", "where",
)  # fmt: skip

# What a NAME stands for depends on the word before it.
_NAME_AFTER = {
    "rule": "a rule name",
    "team": "a team name",
    "command": "a command name",
    "button": "a button name",
    "event": "an event name",
    "emit": "an event name",
    "severity": "a severity such as warning or critical",
    "from": "a service name",
    "label": "a label name",
    "role": "a role name",
    "another": "a role name",
    "notify": "a team name",
    "to": "a team name",
    "missing": "an alert name such as Watchdog",
    "where": "a label name such as service",
    "network": "'none', 'default' or 'allow'",
    ":": "a type such as word, text, int, duration, user or a|b|c",
}

# Keywords first: alternatives are listed in this order.
TERMINAL_WORDS = {word.upper(): f"'{word}'" for word in KEYWORDS} | {
    "NAME": "a name",
    "SCRIPT": "a script name such as backup.sh",
    "FIELD": "a field such as alert.service",
    "LITERAL": "a value",
    "PERSON": "a person such as @alice",
    "STRING": "a quoted text",
    "REGEX": "a regular expression such as /disk .* full/",
    "PLACEHOLDER": "a {field}",
    "DURATION": "a duration such as 30s, 10m or 1h",
    "SIZE": "a size such as 512m or 5gb",
    "INT": "a whole number",
    "CLOCK": "a time of day such as 03:00",
    "ZONE": "a time zone such as UTC or Europe/Berlin",
    "COLON": "':'",
    "COMMA": "','",
    "PIPE": "'|'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "EQ": "'='",
    "NE": "'!='",
    "LT": "'<'",
    "LE": "'<='",
    "GT": "'>'",
    "GE": "'>='",
    "TILDE_EQ": "'=~'",
    "TILDE_NE": "'!~'",
    "_NL": "the end of the line",
    "_INDENT": "an indented line",
    "_DEDENT": "the end of the rule block",
    "$END": "the end of the file",
}

_KEYWORD_TERMINALS = frozenset(word.upper() for word in KEYWORDS)
_RANK = {name: rank for rank, name in enumerate(TERMINAL_WORDS)}
# Said only when nothing else fits: "expected 'on' or 'rule'" reads better without "or the end of the file".
_STRUCTURAL = {"$END", "_DEDENT"}
_MAX_LISTED = 4
# Many alternatives of one sort read better as the sort: "expected a trigger such as ...".
_GROUP_AT = 3
_GROUPS = (
    (
        frozenset({"ALERT", "COMMAND", "BUTTON", "TASK", "SCHEDULE", "EVENT", "MESSAGE"}),
        "a trigger such as alert, command or schedule",
    ),
    (
        frozenset({"WHEN", "REQUIRE", "DEDUPE", "GROUP", "AT", "CHECK", "NOTIFY", "REPLY", "RUN", "EMIT", "SILENCE",
                   "ESCALATE"}),
        "a clause or an action such as 'notify' or 'run'",
    ),
    (frozenset({"EQ", "NE", "LT", "LE", "GT", "GE"}), "a comparison such as >="),
)
# Words that start a line of a rule block; one of them in column 1 is most likely a line that lost its indent.
_BODY_WORDS = frozenset(
    {"when", "require", "dedupe", "group", "at", "check", "notify", "reply", "run", "emit", "silence", "escalate"}
)
_WORD_BEFORE = re.compile(r"[A-Za-z0-9_.\-]+|:")
# `on alert missing` and the word after it (none when the line ends there or a comment starts).
_MISSING = re.compile(r'\bon\s+alert\s+missing\b[ \t]*(?P<word>[^\s#"]*)')
_DURATION_LIKE = re.compile(r"\d")  # no alert name starts with a digit: `missing 10m` forgot the name
_KEYWORD_WORDS = frozenset(KEYWORDS)


@dataclass(frozen=True, slots=True)
class NextLine:
    """The first word of the line after a chunk: what the parser would have met had it read on."""

    line: int
    word: str


def describe_syntax_error(
    err: UnexpectedInput,
    *,
    path: str,
    lines: list[str],
    offset: int,
    next_line: NextLine | None,
    after_rule: bool,
) -> Diagnostic:
    """Turn a lark error raised while parsing `lines` (file lines `offset + 1` on) into a diagnostic.

    `next_line` is where the following chunk starts, if any; `after_rule` says whether a chunk came before.
    """
    src = _Source(path, lines, offset, after_rule)
    nameless = _nameless_heartbeat(src, getattr(err, "line", None))
    if nameless is not None:
        return nameless
    expected = _expected(err)
    if isinstance(err, UnexpectedCharacters):
        if err.char in "\"/" and _unclosed(lines, err.line, err.column):
            return _unclosed_quote(src, err.line, err.column, err.char)
        char = err.char if err.char.isprintable() else repr(err.char)[1:-1]
        return _unexpected(src, err.line, err.column, 1, expected, found=f"character '{char}'", word=None)
    token = err.token if isinstance(err, UnexpectedToken) else None
    if token is None or token.type == "$END":
        return _at_end(src, expected, next_line)
    line, col = token.line or 1, token.column or 1
    if token.type == "_INDENT":
        return Diagnostic(
            src.span(line, 1, len(token) + 1),
            "unexpected indentation",
            hint="indent only the lines of a 'rule <name>:' block, and all of them by the same amount",
        )
    if token.type in ("_NL", "_DEDENT"):
        return _unexpected(src, line, col, 1, expected, found=TERMINAL_WORDS[token.type], word=None)
    width = (token.end_column or col + 1) - col if token.end_line == token.line else 1
    return _unexpected(src, line, col, width, expected, found=f"'{token}'", word=str(token))


@dataclass(frozen=True, slots=True)
class _Source:
    """The lines a chunk was parsed from, and how to turn its positions into file positions."""

    path: str
    lines: list[str]
    offset: int
    after_rule: bool

    def span(self, line: int, col: int, width: int) -> Span:
        return Span(self.path, line + self.offset, col, line + self.offset, col + max(width, 1))

    def word_before(self, line: int, col: int) -> str | None:
        text = self.lines[line - 1][: col - 1] if 0 < line <= len(self.lines) else ""
        words = _WORD_BEFORE.findall(text)
        return words[-1] if words else None


def _unexpected(
    src: _Source, line: int, col: int, width: int, expected: set[str], *, found: str, word: str | None
) -> Diagnostic:
    """Say "expected X after 'Y', found Z" when X is a few alternatives, else "unexpected Z after 'Y'"."""
    previous = src.word_before(line, col)
    after = f" after '{previous}'" if previous else ""
    words = _describe(expected, previous)
    if words and len(words) <= _MAX_LISTED:
        message = f"expected {join_words(words)}{after}, found {found}"
    else:
        message = f"unexpected {found}{after}"
    keywords = [name.lower() for name in expected if name in _KEYWORD_TERMINALS]
    suggestion = did_you_mean(word, keywords) if word is not None else None
    if suggestion is not None and suggestion != word:
        message += f"; did you mean '{suggestion}'?"
    hint = None
    if src.after_rule and col == 1 and word in _BODY_WORDS and "RULE" in expected:
        hint = "a line that belongs to the rule above is indented like the rule's other lines"
    return Diagnostic(src.span(line, col, width), message, hint=hint)


def _nameless_heartbeat(src: _Source, error_line: int | None) -> Diagnostic | None:
    """`on alert missing for 10m` forgot the heartbeat alert's name: lark reads 'for' as the name and then stumbles
    on '10m' ("expected 'for' after 'for'"), which says nothing useful; say what is missing instead."""
    for number, text in enumerate(src.lines, start=1):
        if error_line not in (None, -1, 0, number):
            continue
        found = _MISSING.search(text.split("#", 1)[0].split('"', 1)[0])  # not in a comment or a quoted text
        if found is None:
            continue
        word = found.group("word")
        if word and word not in _KEYWORD_WORDS and not _DURATION_LIKE.match(word):
            continue  # a name is there: the problem is elsewhere
        col = found.start("word") + 1
        return Diagnostic(
            src.span(number, col, len(word)),
            "'on alert missing' needs the name of the heartbeat alert, e.g. 'on alert missing Watchdog for 10m'",
            hint="the name is the alertname of the alert that should keep arriving (Alertmanager's Watchdog)",
        )
    return None


def _unclosed(lines: list[str], line: int, col: int) -> bool:
    """Whether the quote or slash at (line, col) has no partner later on its line."""
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    mark = text[col - 1 : col]
    return bool(mark) and mark not in text[col:]


def _unclosed_quote(src: _Source, line: int, col: int, mark: str) -> Diagnostic:
    """A quoted text or regex that runs to the end of its line: they never span lines."""
    width = len(src.lines[line - 1]) - col + 1 if 0 < line <= len(src.lines) else 1
    if mark == '"':
        return Diagnostic(
            src.span(line, col, width),
            "this quoted text has no closing '\"' on its line",
            hint='a quoted text ends on the line it starts on; write \\" for a quote inside it',
        )
    return Diagnostic(
        src.span(line, col, width),
        "this regular expression has no closing '/' on its line",
        hint="a regular expression ends on the line it starts on; write \\/ for a slash inside it",
    )


def _at_end(src: _Source, expected: set[str], next_line: NextLine | None) -> Diagnostic:
    """The chunk ended too soon: point at the next rule's first word, or just after the file's last text."""
    if expected == {"_INDENT"}:
        header = src.lines[0].split("#", 1)[0].strip()
        what = f"expected the body of '{header}' on the indented lines below it"
    else:
        words = _describe(expected, None)
        what = f"expected {join_words(words)}" if words else "the rule is not finished"
    if next_line is not None:
        span = Span(src.path, next_line.line, 1, next_line.line, len(next_line.word) + 1)
        return Diagnostic(span, f"{what}, found '{next_line.word}'")
    code = [text.split("#", 1)[0].rstrip() for text in src.lines]
    last = max((i for i, text in enumerate(code) if text.strip()), default=0)
    return Diagnostic(src.span(last + 1, len(code[last]) + 1, 1), f"{what}, found {TERMINAL_WORDS['$END']}")


def _describe(expected: Collection[str], previous: str | None) -> list[str]:
    names = [name for name in expected if name in TERMINAL_WORDS]
    if any(name not in _STRUCTURAL for name in names):
        names = [name for name in names if name not in _STRUCTURAL]
    names.sort(key=lambda name: _RANK[name])
    words: list[str] = []
    phrases = []
    for members, phrase in _GROUPS:
        if len(members & set(names)) >= _GROUP_AT:
            phrases.append(phrase)
            names = [name for name in names if name not in members]
    for name in names:
        text = TERMINAL_WORDS[name]
        if name == "NAME":
            text = _NAME_AFTER.get(previous or "", text)
        if text not in words:
            words.append(text)
    return words + phrases


def _expected(err: UnexpectedInput) -> set[str]:
    """What the parser could take here, from its table (the lexer's list has always-accepted ones)."""
    state = getattr(err, "state", None)
    try:
        return set(state.parse_conf.parse_table.states[state.position])  # type: ignore[union-attr]
    except AttributeError:
        pass
    if isinstance(err, UnexpectedToken):
        return set(err.expected)
    if isinstance(err, UnexpectedCharacters):
        return set(err.allowed or ())
    if isinstance(err, UnexpectedEOF):
        return set(err.expected)
    return set()
