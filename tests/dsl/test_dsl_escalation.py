"""Escalation policies in the language (issue 19): steps and a repeat parse, print back, describe, and are checked
with file:line:col diagnostics; the one-step form keeps its meaning and its fingerprint."""

from __future__ import annotations

from dsl import EscalateAction, EscalateStep, format_source
from dsl.describe import describe
from tests.dsl.support import compile_ok, compile_text

POLICY = "escalate to oncall after 5m, to dba after 15m, repeat every 30m until acknowledged"


def _escalate(line: str) -> EscalateAction:
    graph = compile_ok(f"rule r:\n  on alert from db\n  notify ops\n  {line}\n").graph
    assert graph is not None
    action = graph.rules[0].actions[-1]
    assert isinstance(action, EscalateAction)
    return action


def test_a_policy_becomes_steps_and_a_repeat() -> None:
    action = _escalate(POLICY)
    assert action.steps == (EscalateStep("oncall", 300.0), EscalateStep("dba", 900.0))
    assert action.repeat_s == 1800.0
    assert describe(action) == POLICY


def test_the_one_step_form_means_what_it_meant() -> None:
    action = _escalate("escalate to oncall after 15m unless acknowledged")
    assert action.steps == (EscalateStep("oncall", 900.0),) and action.repeat_s is None
    assert describe(action) == "escalate to oncall after 15m unless acknowledged"
    # the canonical text is unchanged, so is the fingerprint that keys the timers already pending
    assert _escalate("escalate to oncall after 900s unless acknowledged").fingerprint == action.fingerprint
    assert _escalate("escalate to oncall after 15m until acknowledged").fingerprint == action.fingerprint
    assert _escalate(POLICY).fingerprint != action.fingerprint


def test_fmt_round_trips_a_policy() -> None:
    messy = ("rule r:\n  on alert from db\n  escalate   to oncall after 300s ,to dba after 15m,"
             "repeat every 1800s unless acknowledged\n")
    tidy = format_source(messy, "r.rules")
    assert tidy == f"rule r:\n  on alert from db\n  {POLICY}\n"
    assert format_source(tidy, "r.rules") == tidy
    one_line = "on alert escalate to ops after 5m, repeat every 1h until acknowledged\n"
    assert format_source(one_line, "r.rules") == one_line


def _problems(line: str) -> list[str]:
    return [f"{d.span.line}:{d.span.col}: {d.message}"
            for d in compile_text(f"rule r:\n  on alert\n  {line}\n").diagnostics]


def test_steps_must_come_in_the_order_they_happen() -> None:
    assert _problems("escalate to oncall after 15m, to dba after 15m unless acknowledged") == [
        "3:46: this step comes after 15m, which is not later than the step before it (after 15m)"]
    assert _problems("escalate to oncall after 1h, to dba after 5m unless acknowledged") == [
        "3:45: this step comes after 5m, which is not later than the step before it (after 1h)"]


def test_unknown_targets_are_reported_like_notify() -> None:
    [problem] = compile_text("rule r:\n  on alert\n  escalate to oncall after 5m, to managrs after 10m "
                             "unless acknowledged\n").diagnostics
    assert (problem.span.line, problem.span.col, problem.message) == (3, 35, "unknown team 'managrs'")


def test_repeat_is_bounded_comes_last_and_needs_a_step() -> None:
    assert _problems("escalate to oncall after 5m, repeat every 30s until acknowledged") == [
        "3:32: 'repeat every 30s' is too often: repeat every 1m or more"]
    assert _problems("escalate repeat every 30m until acknowledged") == [
        "3:3: an escalation needs at least one step such as 'to oncall after 5m'"]
    assert _problems("escalate repeat every 30m, to oncall after 5m until acknowledged") == [
        "3:12: 'repeat every' comes last, after the steps"]
    assert _problems("escalate to oncall after 5m, repeat every 30m, repeat every 1h until acknowledged") == [
        "3:50: 'repeat every' is given twice in this escalation"]


def test_a_policy_fits_alert_rules_only_and_has_ten_steps_at_most() -> None:
    [problem] = compile_text(f"on command x {POLICY}\n").diagnostics
    assert problem.message == "only an alert can be acknowledged, so 'escalate' fits alert rules only"
    steps = ", ".join(f"to oncall after {n}m" for n in range(1, 12))
    assert _problems(f"escalate {steps} unless acknowledged") == ["3:213: an escalation has at most 10 steps"]


def test_a_broken_policy_is_a_syntax_error_in_plain_words() -> None:
    [problem] = compile_text("on alert escalate to oncall after 5m, repeat 30m until acknowledged\n").diagnostics
    assert problem.span.line == 1 and "'every'" in problem.message
