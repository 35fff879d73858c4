"""A quicker loop over lark's LALR table, for text that parses: lark's parser does everything else.

lark's `ParserState.feed_token` is general (interactive parsing, `on_error` recovery, debug checks), and for each
token and each reduction it pays for that in calls and checks. `QuickLALR` runs the same table with the same
callbacks (lark's tree-builder wrappers around `dsl.builder.AstBuilder`) and the same lexer thread, in one loop:
shift, reduce and goto, nothing more. It keeps no error handling at all: when the table has no action for a
token, or the lexer raises, it raises `NoQuickParse`, and the caller parses the same text again with lark's own
`Lark.parse`, which raises lark's error with lark's parser state (the one `dsl.syntax_errors` reads). So every
syntax error is lark's, and a text either gets lark's error or the value lark's parser would have built.

It is set up only when the lark in use has the parts it reads (`parse_table`, `callbacks`, the frontend's lexer
thread); otherwise `QuickLALR.for_parser` returns None and everything goes through `Lark.parse`.
`tests/dsl/test_dsl_grammar.py` holds the two to the same results on the docs, examples and broken texts, and
`tests/dsl/test_dsl_properties.py` holds `parse_recovering` (this loop) to one `Lark.parse` per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lark import Lark, Token
from lark.parsers.lalr_analysis import Shift

_Reduce = tuple[int, str, Callable[[list[Any]], Any]]


class NoQuickParse(Exception):
    """The quick loop stopped (a syntax error, or anything unexpected): parse the text with lark's parser."""


class _Position:
    """What the contextual lexer asks the parser for: the state it is in."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position


class QuickLALR:
    """lark's LALR table and callbacks for `start`, run by a loop that only shifts and reduces."""

    def __init__(self, lark: Lark, start: str = "start") -> None:
        frontend = lark.parser
        parser = frontend.parser.parser  # lark's _Parser: the table and the callbacks
        table = parser.parse_table
        callbacks = parser.callbacks
        self._start: int = table.start_states[start]
        self._end: int = table.end_states[start]
        self._make_thread: Callable[[str], Any] = frontend._make_lexer_thread
        self._token_callbacks = {name: f for name, f in callbacks.items() if isinstance(name, str)}
        # The table with each reduction spelled out once: how many values the rule takes, the name its goto is
        # keyed by and its callback (lark looks these up on the rule object at every reduction).
        reductions: dict[Any, _Reduce] = {}
        self._states: dict[int, dict[str, tuple[bool, Any]]] = {}
        for state, actions in table.states.items():
            row: dict[str, tuple[bool, Any]] = {}
            for kind, (action, arg) in actions.items():
                if action is Shift:
                    row[str(kind)] = (True, arg)
                    continue
                if arg not in reductions:
                    reductions[arg] = (len(arg.expansion), str(arg.origin.name), callbacks[arg])
                row[str(kind)] = (False, reductions[arg])
            self._states[state] = row

    @classmethod
    def for_parser(cls, lark: Lark) -> QuickLALR | None:
        """The quick loop for `lark`, or None when this lark is not built the way the loop expects."""
        try:
            return cls(lark)
        except (AttributeError, KeyError, TypeError):
            return None

    def parse(self, text: str) -> Any:
        """What `lark.parse(text)` returns; `NoQuickParse` where lark's parser would raise (or might)."""
        try:
            return self._parse(text)
        except NoQuickParse:
            raise
        except Exception as err:  # the lexer's errors, or anything else: lark's parser says what it is
            raise NoQuickParse from err

    def _parse(self, text: str) -> Any:
        states, token_callbacks = self._states, self._token_callbacks
        state_stack = [self._start]
        value_stack: list[Any] = []
        where = _Position(self._start)
        token: Token | None = None
        for token in self._make_thread(text).lex(where):
            kind = token.type
            while True:
                found = states[state_stack[-1]].get(kind)
                if found is None:
                    raise NoQuickParse
                shift, arg = found
                if shift:
                    state_stack.append(arg)
                    where.position = arg
                    value_stack.append(token_callbacks[kind](token) if kind in token_callbacks else token)
                    break
                size, origin, callback = arg
                if size:
                    values = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    values = []
                value = callback(values)
                goto = states[state_stack[-1]][origin][1]
                state_stack.append(goto)
                where.position = goto
                value_stack.append(value)
        end = Token.new_borrow_pos("$END", "", token) if token is not None else Token("$END", "", 0, 1, 1)
        while True:
            found = states[state_stack[-1]].get(end.type)
            if found is None or found[0]:
                raise NoQuickParse
            size, origin, callback = found[1]
            if size:
                values = value_stack[-size:]
                del state_stack[-size:]
                del value_stack[-size:]
            else:
                values = []
            value = callback(values)
            goto = states[state_stack[-1]][origin][1]
            state_stack.append(goto)
            value_stack.append(value)
            if goto == self._end:
                return value_stack[-1]
