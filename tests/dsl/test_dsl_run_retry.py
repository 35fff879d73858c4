"""`run ... retry N times backoff D`: parsing, the plan the engine gets, the canonical form, every diagnostic."""

from __future__ import annotations

import pytest

from dsl import RunAction, format_source, parse
from dsl.ast import RunScript
from tests.dsl.support import compile_ok, compile_text


def run_of(text: str) -> RunScript:
    rule_file, diags = parse(text, "rules/ops.rules")
    assert rule_file is not None, diags
    action = rule_file.rules[0].actions[0]
    assert isinstance(action, RunScript)
    return action


def test_retry_and_backoff_reach_the_plan() -> None:
    graph = compile_ok("on command backup run backup.sh sandboxed timeout 1h retry 3 times backoff 30s\n").graph
    assert graph is not None
    assert graph.rules[0].actions == (RunAction("backup.sh", 3600.0, retries=3, backoff_s=30.0),)


def test_without_retry_the_plan_keeps_the_defaults() -> None:
    graph = compile_ok("on command backup run backup.sh\n").graph
    assert graph is not None
    (action,) = graph.rules[0].actions
    assert isinstance(action, RunAction) and (action.retries, action.backoff_s) == (0, None)


@pytest.mark.parametrize(
    "options",
    ["retry 3 times backoff 30s", "retry 3 backoff 30s", "backoff 30s retry 3", "backoff 30s timeout 1h retry 3 times"],
)
def test_times_is_optional_and_options_come_in_any_order(options: str) -> None:
    run = run_of(f"on command x run backup.sh {options}\n")
    assert (run.retries, run.backoff_s) == (3, 30.0)


def test_retry_keeps_the_spans_of_its_number_and_delay() -> None:
    run = run_of("on command x run backup.sh retry 3 times backoff 30s\n")
    assert run.retries_span is not None and run.backoff_span is not None
    assert (run.retries_span.line, run.retries_span.col, run.retries_span.end_col) == (1, 34, 35)
    assert (run.backoff_span.col, run.backoff_span.end_col) == (50, 53)


def test_retry_without_backoff_leaves_the_delay_to_the_engine() -> None:
    run = run_of("rule r:\n  on command x\n  run backup.sh retry 2\n")
    assert (run.retries, run.backoff_s, run.backoff_span) == (2, None, None)


def test_the_formatter_writes_the_canonical_order_and_times() -> None:
    text = 'on command x run backup.sh args "a" backoff 90s memory 64m retry 2 timeout 5m\n'
    assert format_source(text, "p.rules") == (
        'on command x run backup.sh sandboxed timeout 5m retry 2 times backoff 1m30s memory 64m args "a"\n'
    )
    block = "rule r:\n  on command x\n  run backup.sh retry 1 times\n"
    assert format_source(block, "p.rules") == "rule r:\n  on command x\n  run backup.sh sandboxed retry 1 times\n"


def test_retry_changes_the_fingerprint_and_its_absence_does_not() -> None:
    def fingerprint(text: str) -> str:
        graph = compile_ok(text).graph
        assert graph is not None
        return graph.rules[0].fingerprint

    plain = fingerprint("on command x run backup.sh\n")
    three = fingerprint("on command x run backup.sh retry 3\n")
    assert plain == fingerprint("on command x run backup.sh sandboxed\n")
    assert three != plain
    assert three == fingerprint("on command x run backup.sh retry 3 times\n")
    assert three != fingerprint("on command x run backup.sh retry 3 backoff 5s\n")


@pytest.mark.parametrize(
    ("options", "message", "where"),
    [
        ("retry 50 times", "retry takes 1 to 10 times, found 50", (34, 36)),
        ("retry 11", "retry takes 1 to 10 times, found 11", (34, 36)),
        ("retry 0 times", "retry takes 1 to 10 times, found 0", (34, 35)),
        ("retry 3 backoff 0s", "backoff takes 1s to 1h, found 0s", (44, 46)),
        ("retry 3 backoff 61m", "backoff takes 1s to 1h, found 1h1m", (44, 47)),
        ("backoff 30s", "'backoff' without 'retry' has nothing to wait for", (36, 39)),
        ("retry 2 retry 3", "'retry' is given twice; the first is at column 28", (36, 43)),
        ("retry 2 backoff 1s backoff 2s", "'backoff' is given twice; the first is at column 36", (47, 57)),
    ],
)
def test_each_mistake_has_its_diagnostic(options: str, message: str, where: tuple[int, int]) -> None:
    result = compile_text(f"on command x run backup.sh {options}\n")
    assert result.graph is None
    assert [(d.message, (d.span.col, d.span.end_col)) for d in result.diagnostics] == [(message, where)]


def test_the_limits_themselves_are_fine() -> None:
    compile_ok("on command x run backup.sh retry 1 backoff 1s\non command y run backup.sh retry 10 times backoff 1h\n")


def test_a_retry_of_zero_says_how_to_have_none() -> None:
    (diag,) = compile_text("on command x run backup.sh retry 0\n").diagnostics
    assert diag.hint == "leave 'retry' out for a single attempt"


@pytest.mark.parametrize(
    ("options", "rendered"),
    [
        (
            "retry many times",
            "rules/ops.rules:1:34: expected a whole number after 'retry', found 'many'\n"
            "   on command x run backup.sh retry many times\n"
            "                                    ^^^^",
        ),
        (
            "retry 3 backoff soon",
            "rules/ops.rules:1:44: expected a duration such as 30s, 10m or 1h after 'backoff', found 'soon'\n"
            "   on command x run backup.sh retry 3 backoff soon\n"
            "                                              ^^^^",
        ),
        (
            "retry",
            "rules/ops.rules:1:33: expected a whole number after 'retry', found the end of the line\n"
            "   on command x run backup.sh retry\n"
            "                                   ^",
        ),
        (
            "retry 3 tims",
            "rules/ops.rules:1:36: unexpected 'tims' after '3'; did you mean 'times'?\n"
            "   on command x run backup.sh retry 3 tims\n"
            "                                      ^^^^",
        ),
    ],
)
def test_syntax_errors_read_well(options: str, rendered: str) -> None:
    assert compile_text(f"on command x run backup.sh {options}\n").render_all() == rendered


def test_retry_is_still_a_name_where_only_a_name_fits() -> None:
    compile_ok("on command x notify ops with buttons retry\non button retry run backup.sh retry 2\n")
