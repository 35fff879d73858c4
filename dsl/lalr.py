"""A quicker loop over lark's LALR table, for text that parses: lark's parser does everything else.

lark's `ParserState.feed_token` is general (interactive parsing, `on_error` recovery, debug checks), and for each
token and each reduction it pays for that in calls and checks. `QuickLALR` runs the same table with the same
lexer thread and the same callbacks in one loop: shift, reduce and goto, nothing more. It keeps no error
handling at all: when the table has no action for a token, or the lexer raises, it raises `NoQuickParse`, and
the caller parses the same text again with lark's own `Lark.parse`, which raises lark's error with lark's parser
state (the one `dsl.syntax_errors` reads). So every syntax error is lark's, and a text either gets lark's error
or the value lark's parser would have built.

The callbacks are lark's tree-builder chain for each rule: drop the filtered tokens (`_NL`, `_INDENT`, ...) and
splice in the children of inlined rules (`_part`, `__line_rule_star_2`), return a `?rule`'s single child, else
call the `AstBuilder` method. The loop reads that chain once per rule (lark's `ChildFilterLALR_NoPlaceholders`
and `ExpandSingleChild` hold what to keep, what to splice and whether to pass a single child) and does those
steps itself, with an inlined rule's children as a plain list, so a reduction costs one call (the builder's) or
none (an inlined rule) instead of three to five. Where a chain holds anything else, the loop calls lark's
callbacks as they are.

It is set up only when the lark in use has the parts it reads (`parse_table`, `callbacks`, the frontend's lexer
thread); otherwise `QuickLALR.for_parser` returns None and everything goes through `Lark.parse`.
`tests/dsl/test_dsl_grammar.py` holds the two to the same results on the docs, examples and broken texts, and
`tests/dsl/test_dsl_properties.py` holds `parse_recovering` (this loop) to one `Lark.parse` per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from lark import Lark, Token
from lark.parse_tree_builder import ChildFilterLALR_NoPlaceholders, ExpandSingleChild
from lark.parsers.lalr_analysis import Shift

# What a reduction needs: how many values the rule takes, the name its goto is keyed by, which values to keep
# (index, splice?) or None for all, whether a single kept child is the value, the callback (None: the rule is
# inlined, its value is the list of its children), and for an inlined rule of one child the short way to its
# value (_WRAP: a list of that child; _SAME: the child's own list, spliced; 0: none).
_Reduce = tuple[int, str, tuple[tuple[int, bool], ...] | None, bool, Callable[[list[Any]], Any] | None, int]
_WRAP, _SAME = 1, 2


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
        rules = {arg for actions in table.states.values() for action, arg in actions.values() if action is not Shift}
        planned = {rule: _plan(rule, callbacks[rule], lark.options.transformer) for rule in rules}
        # Whether the loop does the tree builder's steps itself; if a chain holds anything it does not know, it
        # calls lark's callbacks as they are, for every rule (their inlined values are what lark's steps expect).
        self.plans_own_steps = all(plan is not None for plan in planned.values())
        plans = {
            rule: plan if plan is not None and self.plans_own_steps else _as_is(rule, callbacks[rule])
            for rule, plan in planned.items()
        }
        self._states: dict[int, dict[str, tuple[bool, Any]]] = {}
        for state, row in table.states.items():
            self._states[state] = {
                str(kind): (True, arg) if action is Shift else (False, plans[arg])
                for kind, (action, arg) in row.items()
            }

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
        state = self._start
        for token in self._make_thread(text).lex(where):
            kind = token.type
            while True:
                found = states[state].get(kind)
                if found is None:
                    raise NoQuickParse
                shift, arg = found
                if shift:
                    state = arg
                    state_stack.append(state)
                    where.position = state  # the lexer asks for the next token only after a shift
                    value_stack.append(token if kind not in token_callbacks else token_callbacks[kind](token))
                    break
                # a reduction (as _reduce, written out here where it runs for every token)
                size, origin, keep, single, callback, short = arg
                if short:  # an inlined rule of one child (half the reductions): its value in place
                    if short == _WRAP:
                        value_stack[-1] = [value_stack[-1]]  # its children: that child
                    # (_SAME: that child was spliced in, and its children are already a list)
                    state_stack.pop()
                    state = states[state_stack[-1]][origin][1]
                    state_stack.append(state)
                    continue
                if size:
                    values = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    values = []
                if keep is None:
                    children = values
                else:
                    children = []
                    for index, splice in keep:
                        if not splice:
                            children.append(values[index])
                        elif children:
                            children += values[index]
                        else:
                            children = values[index]
                if callback is None:
                    value = children
                elif single and len(children) == 1:
                    value = children[0]
                else:
                    value = callback(children)
                state = states[state_stack[-1]][origin][1]
                state_stack.append(state)
                value_stack.append(value)
        end = Token.new_borrow_pos("$END", "", token) if token is not None else Token("$END", "", 0, 1, 1)
        while True:
            found = states[state_stack[-1]].get(end.type)
            if found is None or found[0]:
                raise NoQuickParse
            if self._reduce(found[1], state_stack, value_stack) == self._end:
                return value_stack[-1]

    def _reduce(self, plan: _Reduce, state_stack: list[int], value_stack: list[Any]) -> int:
        size, origin, keep, single, callback, _ = plan
        if size:
            values = value_stack[-size:]
            del state_stack[-size:]
            del value_stack[-size:]
        else:
            values = []
        if keep is None:
            children = values
        else:
            children = []
            for index, splice in keep:
                if not splice:
                    children.append(values[index])
                elif children:
                    children += values[index]
                else:  # the left-recursive list of a repetition: grow it in place, as lark does
                    children = values[index]
        if callback is None:
            value: Any = children
        elif single and len(children) == 1:
            value = children[0]
        else:
            value = callback(children)
        goto: int = self._states[state_stack[-1]][origin][1]
        state_stack.append(goto)
        value_stack.append(value)
        return goto


def _plan(rule: Any, callback: Any, transformer: object) -> _Reduce | None:
    """What lark's callback chain for `rule` does, or None when it holds anything but the known steps."""
    keep = None
    if isinstance(callback, ChildFilterLALR_NoPlaceholders):
        keep = tuple((index, bool(splice)) for index, splice in callback.to_include)
        callback = callback.node_builder
    single = isinstance(callback, ExpandSingleChild)
    if single:
        callback = callback.node_builder
    own = getattr(callback, "__self__", None) is transformer  # the builder's method for this rule
    default = isinstance(callback, partial)  # lark's default for a rule the builder has no method for
    if not own and not default:
        return None
    size, origin = len(rule.expansion), str(rule.origin.name)
    if default and origin.startswith("_") and not single:  # inlined: its children go into its parent's
        short = 0
        if size == 1:
            short = _WRAP if keep is None else _SAME if keep == ((0, True),) else 0
        return (size, origin, keep, False, None, short)
    return (size, origin, keep, single, callback, 0)


def _as_is(rule: Any, callback: Callable[[list[Any]], Any]) -> _Reduce:
    return (len(rule.expansion), str(rule.origin.name), None, False, callback, 0)
