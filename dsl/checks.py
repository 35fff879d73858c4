"""Semantic checks: does each rule make sense against the catalog and against the other rules?

Runs on the AST of every file at once (rule names are unique across files) and collects every problem rather
than stopping at the first, so one `herald check` shows all that needs fixing. Two rules for the same command
are fine on purpose: every matching rule fires.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from dsl.ast import AlertTrigger, Notify, Rule, RuleFile, RunScript, Span
from dsl.catalog import Catalog
from dsl.diagnostics import Diagnostic, did_you_mean

# Up to this many known names are listed in a hint; past it the list is noise.
_MAX_LISTED = 6

# For each kind of name: how a hint lists the known ones, and what it says when there are none.
_KINDS = {
    "team": ("known teams", "no teams are configured"),
    "role": ("known roles", "no roles are configured"),
    "script": ("scripts in the scripts folder", "the scripts folder has no scripts"),
    "severity": ("severities", "no severities are configured"),
}


def check_files(files: Sequence[RuleFile], catalog: Catalog) -> list[Diagnostic]:
    """Every problem of meaning in `files` (in the order given), checked against `catalog`."""
    diags: list[Diagnostic] = []
    first_by_name: dict[str, Rule] = {}
    for rule_file in files:
        for rule in rule_file.rules:
            diags.extend(_check_rule(rule, catalog))
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
    return diags


def _check_rule(rule: Rule, catalog: Catalog) -> Iterator[Diagnostic]:
    trigger = rule.trigger
    if isinstance(trigger, AlertTrigger) and trigger.severity is not None:
        yield from _known(
            "severity",
            trigger.severity,
            trigger.severity_span or trigger.span,
            catalog.severities,
            ordered=True,
        )
    for clause in rule.clauses:
        yield from _known("role", clause.role, clause.role_span or clause.span, catalog.roles)
    if not rule.actions:
        label = f"rule '{rule.name}'" if rule.name else "this rule"
        yield Diagnostic(
            rule.span,
            f"{label} has no action",
            hint="add one, such as 'notify <team>' or 'run <script>'",
        )
    for action in rule.actions:
        if isinstance(action, Notify):
            yield from _known("team", action.team, action.team_span or action.span, catalog.teams)
        elif isinstance(action, RunScript):
            yield from _known("script", action.script, action.script_span or action.span, catalog.scripts)
            if action.timeout_s is not None and action.timeout_s <= 0:
                yield Diagnostic(
                    action.timeout_span or action.span,
                    "a timeout of zero would stop the script before it starts",
                    hint="give a positive duration such as 30s, 10m or 1h, or leave the timeout out",
                )


def _known(
    what: str, name: str, span: Span, known: Iterable[str], *, ordered: bool = False
) -> Iterator[Diagnostic]:
    """An 'unknown <what>' diagnostic, with a suggestion and the known names when they are few."""
    names = list(known) if ordered else sorted(known)
    if name in names:
        return
    message = f"unknown {what} '{name}'"
    suggestion = did_you_mean(name, names)
    if suggestion is not None:
        message += f"; did you mean '{suggestion}'?"
    listed, empty = _KINDS[what]
    if not names:
        hint: str | None = empty
    elif len(names) <= _MAX_LISTED:
        hint = f"{listed}: {', '.join(names)}"
    else:
        hint = None
    yield Diagnostic(span, message, hint=hint)
