"""`when` conditions from lark's tree to the AST: a flat list of terms joined by `and`/`or`, made into a tree.

The grammar takes `a and b or c` as one flat list on purpose, so the mix can be refused here with a message
that says what to do ("add parentheses") instead of a bare "unexpected 'or'".
"""

from __future__ import annotations

from collections.abc import Callable

from lark import Token, Tree

from dsl.ast import AllOf, AnyOf, Compare, Condition, IsSet, Matches, MemberOf, Not, Span, Value
from dsl.diagnostics import Diagnostic
from dsl.values import unquote, unslash

SpanOf = Callable[[Tree[Token] | Token], Span]


def value_of(token: Token, span: Span | None = None) -> Value:
    """A literal token as a `Value`: quoted text, a person or a bare word."""
    if token.type == "STRING":
        return Value(unquote(token), "text", span)
    if token.type == "PERSON":
        return Value(str(token)[1:], "person", span)
    return Value(str(token), "word", span)


def build_condition(node: Tree[Token], span_of: SpanOf, diagnostics: list[Diagnostic]) -> Condition:
    """The condition in a `condition` subtree; mixing `and` and `or` adds a diagnostic (and reads as `and`)."""
    terms = [_term(child, span_of, diagnostics) for child in node.children if isinstance(child, Tree)]
    ops = [child for child in node.children if isinstance(child, Token)]
    if not ops:
        return terms[0]
    words = {str(op) for op in ops}
    if len(words) > 1:
        first_or = next(op for op in ops if str(op) == "or")
        diagnostics.append(
            Diagnostic(
                span_of(first_or),
                "'and' and 'or' are mixed without parentheses",
                hint="add parentheses to say which goes first, such as '(a and b) or c' or 'a and (b or c)'",
            )
        )
    whole = span_of(node)
    return AnyOf(tuple(terms), whole) if words == {"or"} else AllOf(tuple(terms), whole)


def _term(node: Tree[Token], span_of: SpanOf, diagnostics: list[Diagnostic]) -> Condition:
    span = span_of(node)
    kids = node.children
    if node.data == "term":
        first = kids[0]
        assert isinstance(first, Token)
        if first.type == "NOT":
            inner = kids[1]
            assert isinstance(inner, Tree)
            return Not(_term(inner, span_of, diagnostics), span)
        inner = kids[1]
        assert isinstance(inner, Tree)
        return build_condition(inner, span_of, diagnostics)
    field = kids[0]
    assert isinstance(field, Token)
    name, field_span = str(field), span_of(field)
    if node.data == "compare":
        op_node, value = kids[1], kids[2]
        assert isinstance(op_node, Tree) and isinstance(value, Token)
        return Compare(name, str(op_node.children[0]), value_of(value, span_of(value)), span, field_span)
    if node.data == "member_of":
        values = tuple(
            value_of(t, span_of(t))
            for t in kids[3:]
            if isinstance(t, Token) and t.type in ("LITERAL", "STRING", "PERSON")
        )
        return MemberOf(name, values, span, field_span)
    if node.data == "regex_match":
        regex = kids[2]
        assert isinstance(regex, Token)
        return Matches(name, unslash(regex), span, field_span, span_of(regex))
    return IsSet(name, span, field_span)
