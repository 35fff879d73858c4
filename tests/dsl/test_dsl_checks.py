"""Semantic checks: unknown names with suggestions, names used twice across files, empty rules, timeouts."""

from __future__ import annotations

from dsl import Catalog, Diagnostic, compile_sources
from tests.dsl.support import CATALOG, compile_text


def only(diags: tuple[Diagnostic, ...]) -> Diagnostic:
    assert len(diags) == 1, diags
    return diags[0]


def test_unknown_team_suggests_the_close_one_and_lists_the_few_known() -> None:
    result = compile_text("on alert notify opz")
    diag = only(result.diagnostics)
    assert result.graph is None
    assert diag.message == "unknown team 'opz'; did you mean 'ops'?"
    assert diag.hint == "known teams: dba, oncall, ops"
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (1, 17, 20)


def test_unknown_role_script_and_severity_are_all_reported_at_their_names() -> None:
    result = compile_text(
        "on command backup require role admn run bakup.sh\non alert severity critcal notify ops\n"
    )
    assert [(d.span.line, d.span.col, d.message) for d in result.diagnostics] == [
        (1, 32, "unknown role 'admn'; did you mean 'admin'?"),
        (1, 41, "unknown script 'bakup.sh'; did you mean 'backup.sh'?"),
        (2, 19, "unknown severity 'critcal'; did you mean 'critical'?"),
    ]
    assert result.diagnostics[2].hint == "severities: info, warning, error, critical"


def test_no_suggestion_for_a_name_far_from_every_known_one() -> None:
    diag = only(compile_text("on alert notify zzz").diagnostics)
    assert diag.message == "unknown team 'zzz'"


def test_many_known_names_are_not_listed() -> None:
    catalog = Catalog(teams=frozenset(f"team{i}" for i in range(20)), roles=frozenset(), scripts=frozenset())
    diag = only(compile_text("on alert notify zzz", catalog=catalog).diagnostics)
    assert diag.hint is None


def test_empty_catalog_says_nothing_is_configured() -> None:
    empty = Catalog(teams=frozenset(), roles=frozenset(), scripts=frozenset())
    result = compile_text("on command x require role admin run backup.sh", catalog=empty)
    assert [d.hint for d in result.diagnostics] == [
        "no roles are configured",
        "the scripts folder has no scripts",
    ]


def test_duplicate_rule_names_across_files_point_at_the_second() -> None:
    block = "rule backup-now:\n  on command backup\n  run backup.sh\n"
    result = compile_sources([("rules/a.rules", block), ("rules/b.rules", "\n\n" + block)], CATALOG)
    diag = only(result.diagnostics)
    assert result.graph is None
    assert diag.span.path == "rules/b.rules"
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (3, 6, 16)
    assert diag.message == "a rule named 'backup-now' already exists at rules/a.rules:1"


def test_two_rules_for_the_same_command_are_allowed() -> None:
    result = compile_text("on command backup run backup.sh\non command backup notify ops\n")
    assert result.diagnostics == ()
    assert result.graph is not None
    assert len(result.graph.commands()["backup"]) == 2


def test_rule_without_action_is_an_error() -> None:
    result = compile_text("rule idle:\n  on command idle\n  require role admin\non command quiet\n")
    assert [(d.span.line, d.message) for d in result.diagnostics] == [
        (1, "rule 'idle' has no action"),
        (4, "this rule has no action"),
    ]
    assert result.graph is None


def test_zero_timeout_is_an_error_at_the_duration() -> None:
    diag = only(compile_text("on command x run backup.sh timeout 0m0s").diagnostics)
    assert diag.message == "a timeout of zero would stop the script before it starts"
    assert (diag.span.col, diag.span.end_col) == (36, 40)


def test_all_problems_are_collected_not_just_the_first() -> None:
    text = (
        "on alert notify opz\n"  # semantic
        "on alert notfy ops\n"  # syntax
        "on command x run nope.sh\n"  # semantic
        "on command y run backup.sh timeout soon\n"  # syntax
        "rule r:\n  on command r\n"  # semantic: no action
    )
    result = compile_text(text)
    assert [d.span.line for d in result.diagnostics] == [1, 2, 3, 4, 5]
    assert result.graph is None


def test_cron_fields_are_checked_as_the_scheduler_reads_them() -> None:
    for cron, problem in [("61 * * * *", "minute: '61' is outside 0-59"),
                          ("0 24 * * *", "hour: '24' is outside 0-23"),
                          ("0 0 0 * *", "day of month: '0' is outside 1-31"),
                          ("0 0 * 13 *", "month: '13' is outside 1-12"),
                          ("0 0 * * funday", "day of week: 'funday' is not a number or a name"),
                          ("*/0 * * * *", "minute: a step must be at least 1"),
                          ("0 0 30 feb *", "day of month: no month in the expression has that day")]:
        diag = only(compile_text(f'on schedule cron "{cron}" notify ops').diagnostics)
        assert diag.message.startswith(f'cron "{cron}": {problem}'), (cron, diag.message)
    assert compile_text('on schedule cron "0 0 29 feb *" notify ops').graph is not None  # leap years have it
    assert compile_text('on schedule cron "0 0 31 2 mon" notify ops').graph is not None  # or: every Monday in Feb


def test_people_and_the_memory_floor_come_from_the_catalog() -> None:
    catalog = Catalog(teams=frozenset({"ops"}), roles=frozenset(), scripts=frozenset({"backup.sh"}),
                      people=frozenset({"alice"}), min_memory_bytes=128 * 1024 * 1024)
    result = compile_text("on alert notify @alicia\non command x run backup.sh memory 100m\n"
                          "on alert notify @alice\non command y run backup.sh memory 128m\n", catalog=catalog)
    assert [(d.span.line, d.message, d.hint) for d in result.diagnostics] == [
        (1, "unknown person 'alicia'; did you mean 'alice'?", "known people: alice"),
        (2, "a memory limit of 100m is too small to start a container", "give at least 128m"),
    ]
    unknown = Catalog(teams=frozenset({"ops"}), roles=frozenset(), scripts=frozenset())  # people not given
    assert compile_text("on alert notify @anyone", catalog=unknown).graph is not None
