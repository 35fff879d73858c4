"""Every construct of the language: it compiles to the plan the engine runs, and it matches the right events."""

from __future__ import annotations

import pytest

from dsl import (
    ButtonSpec,
    Catalog,
    CheckDiskStage,
    ConfirmStage,
    DedupeStage,
    EmitAction,
    EscalateAction,
    EscalateStep,
    GroupStage,
    NotifyAction,
    RateLimitStage,
    ReplyAction,
    RequireRoleStage,
    RunAction,
    ScheduleSpec,
    SilenceAction,
    render_template,
)
from dsl.graph import CompiledRule
from tests.dsl.support import CATALOG, compile_ok, compile_text

GIB = 1024**3


def one(text: str, catalog: Catalog = CATALOG) -> CompiledRule:
    graph = compile_ok(text, catalog=catalog).graph
    assert graph is not None
    return graph.rules[0]


def test_team_declarations_are_targets() -> None:
    result = compile_ok('team web = chat "web", slack "#web"\nteam people = @alice, @bob\non alert notify web\n'
                        "on alert escalate to people after 5m unless acknowledged\n")
    assert [t.name for t in result.teams] == ["web", "people"]
    assert result.teams[0].members[1].platform == "slack"
    assert result.teams[1].members[0].address == "alice"


def test_team_problems() -> None:
    result = compile_text('team ops = chat "x"\nteam a = chatt "x"\nteam a = @z\non alert notify a\n')
    assert [d.message for d in result.diagnostics] == [
        "the team 'ops' is already configured",
        "unknown platform 'chatt'; did you mean 'chat'?",
        "a team named 'a' is already declared at rules/ops.rules:2",
    ]


ALERT = {"alert.status": "firing", "alert.severity": "error", "alert.service": "db", "alert.labels": {"env": "prod"}}


@pytest.mark.parametrize(
    ("trigger", "fields", "hit"),
    [
        ("severity >= warning", {}, True),
        ("severity > error", {}, False),
        ("severity < critical", {}, True),
        ("severity != error", {}, False),
        ("severity error", {}, True),
        ("severity >= warning", {"alert.severity": "bogus"}, False),
        ("label env = prod", {}, True),
        ("label env != prod", {}, False),
        ("label env =~ /^pr/", {}, True),
        ("label env !~ /^pr/", {}, False),
        ("label zone = x", {}, False),
        ("label zone != x", {}, False),  # missing is not empty
        ("label zone !~ /x/", {}, False),
        ("resolved", {}, False),
        ("resolved", {"alert.status": "resolved"}, True),
    ],
)
def test_alert_filters(trigger: str, fields: dict[str, object], hit: bool) -> None:
    rule = one(f"on alert {trigger} notify ops")
    assert rule.matches(ALERT | fields) is hit
    assert (rule.explain(ALERT | fields) is None) is hit


def test_severity_scale_comes_from_the_catalog() -> None:
    catalog = Catalog(teams=CATALOG.teams, roles=CATALOG.roles, scripts=CATALOG.scripts,
                      severities=("low", "high", "page"))
    rule = one("on alert severity >= high notify ops", catalog)
    assert rule.matches(ALERT | {"alert.severity": "page"})
    assert not rule.matches(ALERT | {"alert.severity": "low"})
    assert compile_text("on alert severity >= warning notify ops", catalog=catalog).graph is None


@pytest.mark.parametrize(
    ("condition", "fields", "hit"),
    [
        ("alert.service = db", {}, True),
        ("alert.service = db and alert.severity = critical", {}, False),
        ("alert.service = db or alert.severity = critical", {}, True),
        ("(alert.service = x or alert.severity = error) and not alert.name is set", {}, True),
        ("alert.name is set", {}, False),
        ("not alert.name = x", {}, True),
        ("alert.service in [web, db]", {}, True),
        ('alert.service in ["web"]', {}, False),
        ("alert.service matches /^d/", {}, True),
        ("alert.labels.env = prod", {}, True),
        ("alert.labels.env = staging", {}, False),
        ("alert.labels.zone = a", {}, False),
        ("alert.severity >= warning", {}, True),
        ("alert.severity in [info, warning]", {}, False),
    ],
)
def test_when_conditions(condition: str, fields: dict[str, object], hit: bool) -> None:
    rule = one(f"on alert when {condition} notify ops")
    assert rule.matches(ALERT | fields) is hit


def test_numbers_and_durations_compare_numerically() -> None:
    rule = one("on task backup.sh when task.exit_code >= 2 and task.duration > 1m notify ops")
    assert rule.matches({"task.script": "backup.sh", "task.exit_code": 3, "task.duration": 61})
    assert not rule.matches({"task.script": "backup.sh", "task.exit_code": "1", "task.duration": 61})
    assert not rule.matches({"task.script": "backup.sh", "task.exit_code": "oops", "task.duration": 61})
    assert not rule.matches({"task.script": "backup.sh", "task.duration": 61})


def test_explain_names_the_first_failing_clause_as_written() -> None:
    rule = one("rule r:\n  on alert severity >= error from db\n  when alert.labels.env = staging\n  notify ops")
    assert rule.explain(ALERT) == "when alert.labels.env = staging"
    assert rule.explain(ALERT | {"alert.service": "web"}) == "from db"
    assert rule.explain(ALERT | {"alert.severity": "info"}) == "severity >= error"
    assert rule.explain(ALERT | {"alert.labels": {"env": "staging"}}) is None


def test_command_arguments_bind_by_type() -> None:
    rule = one("on command deploy <app: word> <n: int> [<wait: duration = 1m>] [<who: user>] [<note: text>] "
               "run backup.sh")
    assert rule.bind_args(("web", "3")) == {"app": "web", "n": 3, "wait": 60.0}
    assert rule.bind_args(("web", "3", "2m", "@bob", "after", "lunch")) == {
        "app": "web", "n": 3, "wait": 120.0, "who": "bob", "note": "after lunch",
    }  # fmt: skip
    assert rule.bind_args(("web", "three")) == "n must be a whole number, not 'three'"
    assert rule.bind_args(("web",)).startswith("missing n; usage: /deploy <app: word> <n: int>")  # type: ignore[union-attr]
    assert rule.bind_args(("web", "1", "soon")) == "wait must be a duration such as 30s, 10m or 1h, not 'soon'"


def test_rules_of_one_command_share_its_spec() -> None:
    graph = compile_ok("on command b <s: db|files> run backup.sh\non command b notify ops\n").graph
    assert graph is not None
    assert [r.bind_args(("db",)) for r in graph.rules] == [{"s": "db"}, {"s": "db"}]
    assert all(isinstance(r.bind_args(("x",)), str) for r in graph.rules)


def test_command_spec_problems() -> None:
    messages = [d.message for d in compile_text(
        "on command a <x: text> <y: word> run backup.sh\n"
        "on command b [<x: int>] <y: word> run backup.sh\n"
        "on command c <name: word> <x: int> <x: int> run backup.sh\n"
    ).diagnostics]
    assert messages == [
        "'x' takes the rest of the line (type text), so it must come last",
        "the required argument 'y' comes after an optional one",
        "an argument cannot be named 'name': command.name is a field every command has",
        "the argument 'x' is declared twice",
    ]


def test_clauses_become_stages_with_fingerprints() -> None:
    rule = one("rule r:\n  on command backup\n  require role admin\n  require confirmation by another admin within 2m\n"
               "  dedupe by command.user for 1m\n  group by command.user within 30s\n"
               "  at most 2 per 1h per command.user\n  check disk \"/var\" has 5gb free\n  run backup.sh")
    kinds = [type(s) for s in rule.stages]  # the confirmation is asked last, after every clause that may refuse
    assert kinds == [RequireRoleStage, DedupeStage, GroupStage, RateLimitStage, CheckDiskStage, ConfirmStage]
    assert rule.stages[5] == ConfirmStage("admin", 120.0, rule.stages[5].fingerprint)
    assert rule.stages[3] == RateLimitStage(2, 3600.0, "command.user", rule.stages[3].fingerprint)
    assert rule.stages[4] == CheckDiskStage("/var", 5 * GIB, rule.stages[4].fingerprint)
    assert len({s.fingerprint for s in rule.stages}) == 6
    assert rule.required_roles == ("admin",)


def test_clause_fingerprints_survive_moves_and_comments() -> None:
    a = one("on command x dedupe by command.user for 1m notify ops")
    b = one("# moved\n\nrule named:\n  on command x   # c\n  dedupe by command.user for 60s\n  notify ops\n")
    assert a.stages == b.stages
    assert a.fingerprint == b.fingerprint
    c = one("on command x dedupe by command.user for 2m notify ops")
    assert c.stages[0].fingerprint != a.stages[0].fingerprint


def test_actions_become_the_plan() -> None:
    rule = one("rule r:\n  on alert\n  notify ops saying \"{alert.service} down\" with buttons ack, mute 1h\n"
               "  run backup.sh sandboxed timeout 1h memory 512m network default args \"{alert.service}\" \"-v\"\n"
               "  emit x\n  silence alert by alert.fingerprint for 2h\n"
               "  escalate to @carol after 15m unless acknowledged\non event x notify ops")
    notify, run, emit, silence, escalate = rule.actions
    assert notify == NotifyAction("ops", True, "{alert.service} down", (ButtonSpec("ack"), ButtonSpec("mute", "1h")))
    assert run == RunAction("backup.sh", 3600.0, 512 * 1024**2, "default", ("{alert.service}", "-v"))
    assert emit == EmitAction("x")
    assert isinstance(silence, SilenceAction) and (silence.by_field, silence.duration_s) == ("alert.fingerprint", 7200)
    assert isinstance(escalate, EscalateAction) and escalate.steps == (EscalateStep("@carol", 900.0),)
    assert silence.fingerprint and escalate.fingerprint


def test_reply_button_task_schedule_event_message_triggers() -> None:
    graph = compile_ok(
        "on command x notify ops with buttons retry\n"
        "on button retry reply \"again: {button.arg}\"\n"
        "on task backup.sh timed_out notify ops\n"
        "rule nightly:\n  on schedule every day at 03:00 in Europe/Berlin\n  run backup.sh\n"
        "on schedule every 15m run backup.sh\n"
        'on schedule cron "0 3 * * 1-5" in UTC run backup.sh\n'
        "on command y emit done\n"
        "on event done notify ops\n"
        "on message matching /(?i)disk full/ reply \"ok\"\n"
    ).graph
    assert graph is not None
    assert [r.name for r in graph.match("button", {"button.action": "retry", "button.arg": "1"})] == [
        "rules/ops.rules:2"]
    assert graph.rules[1].actions == (ReplyAction("again: {button.arg}"),)
    assert len(graph.match("task", {"task.script": "backup.sh", "task.status": "timed_out"})) == 1
    assert graph.match("task", {"task.script": "backup.sh", "task.status": "failed"}) == []
    assert graph.rules[3].schedule == ScheduleSpec("daily", at="03:00", zone="Europe/Berlin")
    assert graph.rules[4].schedule == ScheduleSpec("every", every_s=900.0)
    assert graph.rules[5].schedule == ScheduleSpec("cron", cron="0 3 * * 1-5", zone="UTC")
    assert [r.name for r in graph.match("schedule", {"schedule.rule": "nightly"})] == ["nightly"]
    assert len(graph.match("event", {"event.name": "done"})) == 1
    assert len(graph.match("message", {"message.text": "my DISK FULL again"})) == 1
    assert graph.match("message", {"message.text": "fine"}) == []


def test_render_template() -> None:
    fields = {"alert.service": "db", "alert.labels": {"env": "prod"}, "command.args": ("a", "b"), "n": 3}
    assert render_template("{alert.service} in {alert.labels.env}", fields) == "db in prod"
    assert render_template("{{literal}} {command.args}", fields) == "{literal} a b"
    assert render_template("[{alert.summary}]", fields) == "[]"
    assert render_template("[{alert.summary}]", fields, missing="?") == "[?]"


def test_template_problems() -> None:
    messages = [d.message for d in compile_text('on alert notify ops saying "{alert.nme} { x"').diagnostics]
    assert messages == ["unknown field 'alert.nme' for an alert rule; did you mean 'alert.name'?",
                        "a lone '{'; write '{{' for a brace"] or messages == [
        "a lone '{'; write '{{' for a brace", "unknown field 'alert.nme' for an alert rule; did you mean 'alert.name'?"]


def test_constructs_in_the_wrong_place() -> None:
    messages = [d.message for d in compile_text(
        "on alert require role admin notify ops\n"
        "on alert require confirmation within 1m notify ops\n"
        "on command x escalate to ops after 1m unless acknowledged\n"
        "on command x at most 0 per 1m notify ops\n"
        'on command x check disk "var" has 1g free run backup.sh\n'
    ).diagnostics]
    assert messages == [
        "an alert rule comes from no person, so there are no roles to check",
        "an alert rule has nobody to ask for a confirmation",
        "only an alert can be acknowledged, so 'escalate' fits alert rules only",
        "'at most 0' would never let the rule run",
        "'var' is not an absolute path",
    ]


def test_catalog_gates_what_the_engine_cannot_run() -> None:
    engine = CATALOG.restricted_to(triggers=("alert", "command", "button"), actions=("notify", "run"),
                                   stages=("require role",))
    result = compile_text("on schedule every 1h run backup.sh\non alert dedupe by alert.service for 1m notify ops\n"
                          "on command x emit y\non event y notify ops\n", catalog=engine)
    assert [d.message for d in result.diagnostics] == [
        "no integration provides 'schedule' triggers",
        "no integration provides 'dedupe'",
        "no integration provides the 'emit' action",
        "no integration provides 'event' triggers",
    ]
    assert result.diagnostics[0].hint == "this installation provides these trigger kinds: alert, button, command"
    compile_ok("on alert severity critical from database notify ops with buttons", catalog=engine)


def test_sent_but_unhandled_button_is_a_warning_only() -> None:
    result = compile_text("on alert notify ops with buttons frobnicate")
    assert result.graph is not None
    assert [(d.severity, d.message) for d in result.diagnostics] == [
        ("warning", "no rule handles the button 'frobnicate', so pressing it does nothing")]


def test_self_emit_is_a_loop() -> None:
    result = compile_text("on event tick emit tick")
    assert result.graph is None
    assert "'rules/ops.rules:1' (rules/ops.rules:1) emits 'tick' -> back to" in result.diagnostics[0].message


def test_mute_buttons_offer_any_duration_from_a_minute_to_a_week() -> None:
    result = compile_text("on alert notify ops with buttons ack, mute 30m, mute 4h, mute 7d")
    assert result.graph is not None and result.diagnostics == ()
    for text, message in [("mute", "a mute button needs a duration, such as 'mute 1h', or 'mute until resolved'"),
                          ("mute 30s", "a mute lasts from 1m to 7d, not 30s"),
                          ("mute 8d", "a mute lasts from 1m to 7d, not 8d")]:
        result = compile_text(f"on alert notify ops with buttons ack, {text}")
        assert result.graph is None and [d.message for d in result.diagnostics] == [message], text


def test_a_mute_button_may_last_until_the_alert_resolves() -> None:
    graph = compile_ok("on alert notify ops with buttons ack, mute until resolved, mute 4h").graph
    assert graph is not None
    [rule] = graph.rules
    assert [(b.name, b.arg) for b in rule.button_specs] == [("ack", None), ("mute", "until resolved"), ("mute", "4h")]
    result = compile_text("on alert notify ops with buttons ack until resolved, mute 1h")
    assert result.graph is None
    assert [d.message for d in result.diagnostics] == ["only a mute button can last 'until resolved', not 'ack'"]
