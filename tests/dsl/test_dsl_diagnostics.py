"""Rendering diagnostics: the exact layout of DESIGN §3, carets under the whole span, sorted output."""

from __future__ import annotations

from dsl import Diagnostic, compile_sources, render
from dsl.ast import Span
from tests.dsl.support import CATALOG, compile_text

BLOCK_LINE = "  run backup.sh sandboxed timeout soon"


def test_render_matches_the_design_layout() -> None:
    source = "\n" * 11 + BLOCK_LINE + "\n"
    diag = Diagnostic(
        Span("rules/ops.rules", 12, 35, 12, 39),
        "expected a duration such as 30s, 10m or 1h after 'timeout', found 'soon'",
    )
    assert render(diag, source) == (
        "rules/ops.rules:12:35: expected a duration such as 30s, 10m or 1h after 'timeout', found 'soon'\n"
        "   run backup.sh sandboxed timeout soon\n"
        "                                   ^^^^"
    )


def test_the_parser_produces_that_diagnostic_for_a_bad_timeout() -> None:
    text = "rule backup-now:\n  on command backup\n" + BLOCK_LINE + "\n"
    result = compile_text(text)
    assert result.render_all() == (
        "rules/ops.rules:3:35: expected a duration such as 30s, 10m or 1h after 'timeout', found 'soon'\n"
        "   run backup.sh sandboxed timeout soon\n"
        "                                   ^^^^"
    )


def test_render_shows_at_least_one_caret_and_the_hint() -> None:
    diag = Diagnostic(Span("f", 1, 4, 1, 4), "empty span", hint="a hint")
    assert render(diag, "abc\n") == "f:1:4: empty span\n   abc\n      ^\n   hint: a hint"


def test_render_of_a_span_over_several_lines_underlines_the_rest_of_the_first() -> None:
    diag = Diagnostic(Span("f", 1, 1, 3, 5), "whole rule", severity="warning")
    assert (
        render(diag, "rule x:\n  on command x\n  run\n")
        == "f:1:1: warning: whole rule\n   rule x:\n   ^^^^^^^"
    )


def test_render_keeps_carets_aligned_after_tabs() -> None:
    diag = Diagnostic(Span("f", 1, 11, 1, 14), "m")  # zzz: the tabs count as one column each
    assert render(diag, "\ton\talert zzz") == "f:1:11: m\n   on alert zzz\n            ^^^"


def test_diagnostics_are_sorted_by_path_line_and_column() -> None:
    result = compile_sources(
        [
            ("rules/b.rules", "on alert notify x\non alert notify y"),
            ("rules/a.rules", "on alert notify z run q.sh"),
        ],
        CATALOG,
    )
    assert [(d.span.path, d.span.line, d.span.col) for d in result.diagnostics] == [
        ("rules/a.rules", 1, 17),
        ("rules/a.rules", 1, 23),
        ("rules/b.rules", 1, 17),
        ("rules/b.rules", 2, 17),
    ]
