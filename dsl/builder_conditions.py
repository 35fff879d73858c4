"""`when` conditions to the AST while lark parses: a flat list of terms joined by `and`/`or`, made into a tree.

The grammar takes `a and b or c` as one flat list on purpose, so the mix can be refused here with a message
that says what to do ("add parentheses") instead of a bare "unexpected 'or'".

These are callbacks of the builder in `dsl.builder` (a mixin): each returns an `Extent`, the node it built with
the text it covers, because a parenthesized condition's node has the span of what is inside the parentheses
while the construct around it (`when`, `not`, a bigger condition) covers the parentheses too.
"""

from __future__ import annotations

from lark import Token

from dsl.ast import AllOf, AnyOf, Compare, Condition, IsSet, Matches, MemberOf, Not, Span, Value
from dsl.diagnostics import Diagnostic
from dsl.values import unquote, unslash

_VALUE_TYPES = frozenset({"LITERAL", "STRING", "PERSON"})


def value_of(token: Token, span: Span | None = None) -> Value:
    """A literal token as a `Value`: quoted text, a person or a bare word."""
    kind = token.type
    if kind == "STRING":
        return Value(unquote(token), "text", span)
    if kind == "PERSON":
        return Value(str(token)[1:], "person", span)
    return Value(str(token), "word", span)


class Extent:
    """A condition node and the span of all the text it was built from (parentheses included)."""

    __slots__ = ("node", "span")

    def __init__(self, node: Condition, span: Span) -> None:
        self.node = node
        self.span = span


class ConditionCallbacks:
    """lark callbacks for `condition`, `term` and its aliases; the builder provides `path`, `line_offset`,
    `diagnostics`, `span` and `cover`."""

    path: str
    line_offset: int
    diagnostics: list[Diagnostic]

    def span(self, token: Token) -> Span:
        raise NotImplementedError

    def cover(self, first: Token | Extent, last: object) -> Span:
        raise NotImplementedError

    def condition(self, children: list[Extent | Token]) -> Extent:
        """`term ((and | or) term)*`; mixing `and` and `or` adds a diagnostic (and reads as `and`)."""
        whole = self.cover(children[0], children[-1])
        if len(children) == 1:
            only = children[0]
            assert isinstance(only, Extent)
            return Extent(only.node, whole)
        terms = tuple(child.node for child in children if isinstance(child, Extent))
        ops = [child for child in children if isinstance(child, Token)]
        words = {str(op) for op in ops}
        if len(words) > 1:
            first_or = next(op for op in ops if str(op) == "or")
            self.diagnostics.append(
                Diagnostic(
                    self.span(first_or),
                    "'and' and 'or' are mixed without parentheses",
                    hint="add parentheses to say which goes first, such as '(a and b) or c' or 'a and (b or c)'",
                )
            )
        return Extent(AnyOf(terms, whole) if words == {"or"} else AllOf(terms, whole), whole)

    def term(self, children: list[Token | Extent]) -> Extent:
        """`not TERM` or `( CONDITION )`: the parentheses only group, so the node inside keeps its own span."""
        first, inner = children[0], children[1]
        assert isinstance(first, Token) and isinstance(inner, Extent)
        span = self.cover(first, children[-1])
        if first.type == "NOT":
            return Extent(Not(inner.node, span), span)
        return Extent(inner.node, span)

    def compare_op(self, children: list[Token]) -> Token:
        return children[0]

    def compare(self, children: list[Token]) -> Extent:
        field, op, value = children
        span = self.cover(field, value)
        node = Compare(str(field), str(op), value_of(value, self.span(value)), span, self.span(field))
        return Extent(node, span)

    def member_of(self, children: list[Token]) -> Extent:
        field = children[0]
        span = self.cover(field, children[-1])
        values = tuple(value_of(t, self.span(t)) for t in children[3:] if t.type in _VALUE_TYPES)
        return Extent(MemberOf(str(field), values, span, self.span(field)), span)

    def regex_match(self, children: list[Token]) -> Extent:
        field, _, regex = children
        span = self.cover(field, regex)
        return Extent(Matches(str(field), unslash(regex), span, self.span(field), self.span(regex)), span)

    def presence(self, children: list[Token]) -> Extent:
        field = children[0]
        span = self.cover(field, children[-1])
        return Extent(IsSet(str(field), span, self.span(field)), span)
