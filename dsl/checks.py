"""Semantic checks: does each rule make sense against the catalog and against the other rules?

Runs on the AST of every file at once (rule and team names are unique across files, a command has one argument
spec, buttons and events connect rules) and collects every problem rather than stopping at the first, so one
`herald check` shows all that needs fixing. Each rule's own checks are in `dsl.checks_rule`; loops through
`emit` in `dsl.loops`.

Decisions worth knowing:
- Two rules for the same command are fine (every matching rule fires), but they share one argument spec: a rule
  that writes no arguments takes the spec another rule declares; two different written specs are an error.
- `on button X` needs a rule that sends button X (`with buttons X`) or a button the engine handles itself
  (catalog.buttons: ack, mute); a sent button that nothing handles is a warning.
- `on event X` needs a rule that says `emit X` (or an event the catalog says comes from outside).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dsl.ast import ButtonTrigger, CommandTrigger, Emit, EventTrigger, Notify, Param, Rule, RuleFile, TeamDecl
from dsl.catalog import Catalog
from dsl.checks_rule import RuleContext, check_rule, known_name, known_person
from dsl.diagnostics import Diagnostic, did_you_mean
from dsl.loops import emit_loops
from dsl.values import duration_seconds, format_duration

MUTE_MIN_S, MUTE_MAX_S = 60, 7 * 24 * 3600  # a Mute button's duration: a minute to a week
# A Mute that the alert's resolve ends (at the latest after MUTE_MAX_S: a source that never resolves it).
MUTE_UNTIL_RESOLVED = "until resolved"


def check_files(files: Sequence[RuleFile], catalog: Catalog) -> list[Diagnostic]:
    """Every problem of meaning in `files` (in the order given), checked against `catalog`."""
    diags: list[Diagnostic] = []
    rules = [rule for rule_file in files for rule in rule_file.rules]
    teams = [team for rule_file in files for team in rule_file.teams]
    diags.extend(_check_teams(teams, catalog))
    specs, spec_diags = _command_specs(rules)
    diags.extend(spec_diags)
    ctx = RuleContext(
        catalog=catalog,
        teams=frozenset(catalog.teams) | catalog.default_teams | {team.name for team in teams},
        command_params=specs,
    )
    first_by_name: dict[str, Rule] = {}
    for rule in rules:
        diags.extend(check_rule(rule, ctx))
        if rule.name is None:
            continue
        first = first_by_name.setdefault(rule.name, rule)
        if first is not rule:
            diags.append(
                Diagnostic(
                    rule.name_span or rule.span,
                    f"a rule named '{rule.name}' already exists at {first.span.location}",
                    hint="rule names are unique across all rule files",
                )
            )
    diags.extend(_check_buttons(rules, catalog))
    diags.extend(_check_events(rules, catalog))
    diags.extend(emit_loops(rules))
    return diags


def _check_teams(teams: Sequence[TeamDecl], catalog: Catalog) -> Iterator[Diagnostic]:
    seen: dict[str, TeamDecl] = {}
    for team in teams:
        span = team.name_span or team.span
        if team.name in catalog.teams:
            yield Diagnostic(span, f"the team '{team.name}' is already configured",
                             hint="declare a team either in the config or in a rule file, not both")
        elif team.name in seen:
            yield Diagnostic(span, f"a team named '{team.name}' is already declared at {seen[team.name].span.location}")
        seen.setdefault(team.name, team)
        for member in team.members:
            if member.platform is None:
                yield from known_person(f"@{member.address}", member.span or span, catalog)
            elif member.platform not in catalog.platforms:
                message = f"unknown platform '{member.platform}'"
                suggestion = did_you_mean(member.platform, catalog.platforms)
                if suggestion is not None:
                    message += f"; did you mean '{suggestion}'?"
                yield Diagnostic(member.span or span, message,
                                 hint=f"platforms: {', '.join(sorted(catalog.platforms))}")
                continue
            check = catalog.address_checks.get(member.platform) if member.platform is not None else None
            problem = check(member.address) if check is not None else None
            if problem is not None:
                yield Diagnostic(member.span or span, f"{member.platform} address {member.address!r}: {problem}")


def _command_specs(rules: Sequence[Rule]) -> tuple[dict[str, tuple[Param, ...]], list[Diagnostic]]:
    """Each command's argument spec (from the first rule that writes one), and rules that write another."""
    specs: dict[str, tuple[Param, ...]] = {}
    owners: dict[str, Rule] = {}
    diags: list[Diagnostic] = []
    for rule in rules:
        trigger = rule.trigger
        if not isinstance(trigger, CommandTrigger) or not trigger.params:
            continue
        if trigger.name not in specs:
            specs[trigger.name] = trigger.params
            owners[trigger.name] = rule
        elif _spec_key(specs[trigger.name]) != _spec_key(trigger.params):
            diags.append(
                Diagnostic(
                    trigger.span,
                    f"the command '{trigger.name}' already has other arguments at "
                    f"{owners[trigger.name].span.location}",
                    hint="a command has one argument spec: write the same arguments, or none to share them",
                )
            )
    return specs, diags


def _spec_key(params: Sequence[Param]) -> tuple[object, ...]:
    return tuple(
        (p.name, p.type, p.choices, p.optional, p.default.text if p.default else None) for p in params
    )


def _check_buttons(rules: Sequence[Rule], catalog: Catalog) -> Iterator[Diagnostic]:
    sent: dict[str, Notify] = {}
    for rule in rules:
        for action in rule.actions:
            if isinstance(action, Notify):
                for button in action.button_list:
                    sent.setdefault(button.name, action)
    handled = {rule.trigger.name for rule in rules if isinstance(rule.trigger, ButtonTrigger)}
    for rule in rules:
        trigger = rule.trigger
        if isinstance(trigger, ButtonTrigger) and trigger.name not in sent and trigger.name not in catalog.buttons:
            known = sorted(set(sent) | catalog.buttons)
            message = f"no rule sends a button '{trigger.name}'"
            suggestion = did_you_mean(trigger.name, known)
            if suggestion is not None:
                message += f"; did you mean '{suggestion}'?"
            yield Diagnostic(trigger.name_span or trigger.span, message,
                             hint="a button is sent by 'notify <team> with buttons <name>'")
    for rule in rules:
        for action in rule.actions:
            if not isinstance(action, Notify):
                continue
            for button in action.button_list:
                if button.name == "mute":
                    problem = mute_problem(button.arg)
                    if problem is not None:
                        yield Diagnostic(button.span or action.span, problem,
                                         hint="for example: with buttons ack, mute 30m, mute until resolved")
                elif button.arg == MUTE_UNTIL_RESOLVED:
                    yield Diagnostic(button.span or action.span,
                                     f"only a mute button can last 'until resolved', not '{button.name}'",
                                     hint="for example: with buttons ack, mute until resolved")
                if button.name not in handled and button.name not in catalog.buttons:
                    yield Diagnostic(button.span or action.span,
                                     f"no rule handles the button '{button.name}', so pressing it does nothing",
                                     severity="warning", hint=f"add a rule 'on button {button.name} ...'")


def mute_problem(arg: str | None) -> str | None:
    """Why `mute ARG` cannot be a Mute button (the engine mutes for ARG when it is pressed, or until the alert
    resolves: `mute until resolved`), or None."""
    if arg is None:
        return "a mute button needs a duration, such as 'mute 1h', or 'mute until resolved'"
    if arg == MUTE_UNTIL_RESOLVED:
        return None
    seconds = duration_seconds(arg)
    if not MUTE_MIN_S <= seconds <= MUTE_MAX_S:
        return f"a mute lasts from {format_duration(MUTE_MIN_S)} to {format_duration(MUTE_MAX_S)}, not {arg}"
    return None


def _check_events(rules: Sequence[Rule], catalog: Catalog) -> Iterator[Diagnostic]:
    emitted = {a.event for rule in rules for a in rule.actions if isinstance(a, Emit)} | set(catalog.events)
    for rule in rules:
        trigger = rule.trigger
        if isinstance(trigger, EventTrigger) and trigger.name not in emitted:
            message = f"no rule emits the event '{trigger.name}'"
            suggestion = did_you_mean(trigger.name, emitted)
            if suggestion is not None:
                message += f"; did you mean '{suggestion}'?"
            yield Diagnostic(trigger.name_span or trigger.span, message, hint="an event is raised by 'emit <name>'")


__all__ = ["check_files", "known_name"]
