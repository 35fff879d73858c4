"""The customer's two one-liners and the block form compile and match exactly the events they should."""

from __future__ import annotations

from collections.abc import Iterable

from dsl import CompiledRule, NotifyAction, RunAction
from tests.dsl.support import CUSTOMER_ALERT_LINE, CUSTOMER_COMMAND_LINE, catalog_with, compile_ok

CRITICAL_DB_ALERT = {
    "alert.status": "firing",
    "alert.severity": "critical",
    "alert.service": "database",
    "alert.fingerprint": "abc123",
    "alert.name": "PostgresDown",
    "alert.labels": {"team": "db"},
}

BACKUP_COMMAND = {"command.name": "backup", "command.args": (), "command.text": "/backup"}


def names(rules: Iterable[CompiledRule]) -> list[str]:
    return [rule.name for rule in rules]


def test_customer_alert_line_compiles_to_one_notify_with_buttons() -> None:
    graph = compile_ok(CUSTOMER_ALERT_LINE + "\n").graph
    assert graph is not None
    (rule,) = graph.rules
    assert rule.kind == "alert"
    assert rule.command is None
    assert rule.required_roles == ()
    assert rule.actions == (NotifyAction(team="ops", buttons=True),)


def test_customer_alert_line_matches_only_firing_critical_database_alerts() -> None:
    graph = compile_ok(CUSTOMER_ALERT_LINE).graph
    assert graph is not None
    assert names(graph.match("alert", CRITICAL_DB_ALERT)) == ["rules/ops.rules:1"]

    assert graph.match("alert", CRITICAL_DB_ALERT | {"alert.severity": "warning"}) == []
    assert graph.match("alert", CRITICAL_DB_ALERT | {"alert.service": "web"}) == []
    assert graph.match("alert", CRITICAL_DB_ALERT | {"alert.status": "resolved"}) == []
    for missing in ("alert.status", "alert.severity", "alert.service"):
        fields = {k: v for k, v in CRITICAL_DB_ALERT.items() if k != missing}
        assert graph.match("alert", fields) == [], f"matched without {missing}"
    assert graph.match("command", CRITICAL_DB_ALERT) == []


def test_customer_command_line_requires_admin_and_runs_backup_sandboxed() -> None:
    graph = compile_ok(CUSTOMER_COMMAND_LINE).graph
    assert graph is not None
    (rule,) = graph.rules
    assert (rule.kind, rule.command, rule.required_roles) == ("command", "backup", ("admin",))
    assert rule.actions == (RunAction(script="backup.sh", timeout_s=None),)
    assert graph.match("command", BACKUP_COMMAND) == [rule]
    assert graph.match("command", BACKUP_COMMAND | {"command.name": "restore"}) == []
    assert graph.match("command", {"command.text": "/backup"}) == []
    assert graph.match("alert", BACKUP_COMMAND) == []
    assert graph.commands() == {"backup": (rule,)}


def test_unnamed_rules_are_named_by_path_and_line() -> None:
    text = f"# ops rules\n\n{CUSTOMER_ALERT_LINE}\n{CUSTOMER_COMMAND_LINE}\n"
    graph = compile_ok(text, path="rules/ops.rules").graph
    assert graph is not None
    assert [(r.name, r.location) for r in graph.rules] == [
        ("rules/ops.rules:3", "rules/ops.rules:3"),
        ("rules/ops.rules:4", "rules/ops.rules:4"),
    ]


BLOCKS = """\
rule db-critical:
  on alert severity critical from database
  notify ops with buttons

rule backup-now:
  on command backup
  require role admin
  run backup.sh sandboxed timeout 10m
"""


def test_block_form_means_the_same_as_the_one_liners() -> None:
    blocks = compile_ok(BLOCKS).graph
    lines = compile_ok(f"{CUSTOMER_ALERT_LINE}\n{CUSTOMER_COMMAND_LINE} timeout 10m\n").graph
    assert blocks is not None and lines is not None
    assert [(r.name, r.location) for r in blocks.rules] == [
        ("db-critical", "rules/ops.rules:1"),
        ("backup-now", "rules/ops.rules:5"),
    ]
    assert [r.fingerprint for r in blocks.rules] == [r.fingerprint for r in lines.rules]
    assert blocks.rules[1].actions == (RunAction(script="backup.sh", timeout_s=600.0),)
    assert names(blocks.match("alert", CRITICAL_DB_ALERT)) == ["db-critical"]
    assert names(blocks.match("command", BACKUP_COMMAND)) == ["backup-now"]


def test_blocks_and_one_liners_mix_with_comments_blank_lines_and_tabs() -> None:
    text = (
        "# header comment\n"
        "\n"
        f"{CUSTOMER_ALERT_LINE}   # trailing comment\n"
        "rule db-critical:   # comment on the header\n"
        "\t# a comment inside the block, at another indentation\n"
        "\ton alert resolved from database\n"
        "\n"
        "# a comment in column 1 inside the block\n"
        "\tnotify dba\n"
        f"{CUSTOMER_COMMAND_LINE}"  # no newline at the end of the file
    )
    graph = compile_ok(text).graph
    assert graph is not None
    assert names(graph.rules) == ["rules/ops.rules:3", "db-critical", "rules/ops.rules:10"]
    resolved = {"alert.status": "resolved", "alert.service": "database", "alert.severity": "info"}
    assert names(graph.match("alert", resolved)) == ["db-critical"]


def test_alert_filters_come_in_any_order_and_firing_is_the_default() -> None:
    orders = [
        "on alert severity critical from database notify ops",
        "on alert from database severity critical notify ops",
        "on alert firing from database severity critical notify ops",
        "on alert from database firing severity critical notify ops",
    ]
    prints = set()
    for line in orders:
        graph = compile_ok(line).graph
        assert graph is not None
        assert len(graph.match("alert", CRITICAL_DB_ALERT)) == 1, line
        prints.add(graph.rules[0].fingerprint)
    assert len(prints) == 1


def test_an_alert_rule_without_filters_matches_every_firing_alert() -> None:
    graph = compile_ok("on alert notify oncall").graph
    assert graph is not None
    assert len(graph.match("alert", {"alert.status": "firing"})) == 1
    assert graph.match("alert", {"alert.status": "resolved"}) == []
    assert graph.match("alert", {}) == []


def test_durations_add_up_their_parts() -> None:
    graph = compile_ok(
        "on command a run backup.sh timeout 30s\n"
        "on command b run backup.sh timeout 2h30m\n"
        "on command c run backup.sh timeout 1d\n"
    ).graph
    assert graph is not None
    timeouts = [rule.actions[0].timeout_s for rule in graph.rules]  # type: ignore[union-attr]
    assert timeouts == [30.0, 9000.0, 86400.0]


def test_keywords_can_be_names_where_only_a_name_fits() -> None:
    graph = compile_ok("on command run run backup.sh").graph
    assert graph is not None
    assert graph.rules[0].command == "run"
    graph = compile_ok(
        "on command notify notify with with buttons", catalog=catalog_with(teams={"with"})
    ).graph
    assert graph is not None
    assert graph.rules[0].actions == (NotifyAction(team="with", buttons=True),)
