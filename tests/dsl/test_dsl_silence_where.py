"""`silence alert where LABEL = VALUE [and ...] for D`: its plan, its errors at file:line:col, `herald fmt`."""

from __future__ import annotations

import pytest

from dsl import SilenceAction, SilenceWhereAction, format_source
from tests.dsl.support import compile_ok, compile_text

HUSH = ("rule hush:\n  on command hush <service: word> require role admin\n"
        "  silence alert where service = {command.service} and env = \"prod-{command.service}\" for 1h\n")


def test_the_matchers_and_the_duration_become_the_plan() -> None:
    [rule] = compile_ok(HUSH).graph.rules  # type: ignore[union-attr]
    [action] = rule.actions
    assert action == SilenceWhereAction((("service", "{command.service}"), ("env", "prod-{command.service}")),
                                        3600.0, None, action.fingerprint)
    assert action.fingerprint


def test_the_duration_may_be_a_field_and_the_old_form_still_works() -> None:
    graph = compile_ok('on alert notify ops with buttons quiet 1h, quiet2\n'
                       'on button quiet silence alert where alertname = "Down" for {button.arg}\n'
                       "on button quiet2 silence alert by button.alert_fingerprint for 2h\n").graph
    where, by = (rule.actions[0] for rule in graph.rules[1:])  # type: ignore[union-attr]
    assert isinstance(where, SilenceWhereAction) and (where.duration_s, where.duration_field) == (None, "button.arg")
    assert isinstance(by, SilenceAction) and (by.by_field, by.duration_s) == ("button.alert_fingerprint", 7200)


@pytest.mark.parametrize(("line", "where", "message"), [
    ('on command a silence alert where service = "x"\n', "1:14", "a silence needs an end: add 'for D'"),
    ("on command b silence alert where for 1h\n", "1:14", "'silence alert where' needs at least one LABEL = VALUE"),
    ('on command c silence alert where bad-name = "x" for 1h\n', "1:34", "'bad-name' is not a label name"),
    ('on command d silence alert where service = "{command.nope}" for 1h\n', "1:46", "unknown field 'command.nope'"),
    ("on command e silence alert where service = {command.nope} for 1h\n", "1:45", "unknown field 'command.nope'"),
    ('on command f silence alert where env = "a" and env = "b" for 1h\n', "1:48", "label 'env' is matched twice"),
    ('on command g silence alert where env = "a" for 0s\n', "1:48", "a silence of zero seconds silences nothing"),
    ('on command h silence alert where env = "a" for {command.nope}\n', "1:48", "unknown field 'command.nope'"),
])
def test_malformed_ones_are_errors_at_their_place(line: str, where: str, message: str) -> None:
    result = compile_text(line)
    assert result.graph is None
    rendered = result.render_all()
    assert f"rules/ops.rules:{where}: {message}" in rendered, rendered


def test_fmt_round_trips_it() -> None:
    messy = ("rule hush:\n  on command hush <service: word>\n  require role admin\n"
             "  silence alert   where service={command.service}  and env = \"prod\"   for 60m\n")
    tidy = format_source(messy, "ops.rules")
    assert "  silence alert where service = {command.service} and env = \"prod\" for 1h\n" in tidy
    assert format_source(tidy, "ops.rules") == tidy
    assert format_source(HUSH, "ops.rules").endswith(HUSH.splitlines()[-1] + "\n")
