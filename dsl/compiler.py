"""The whole pipeline: rule files in, `CompileResult(graph | None, diagnostics)` out.

    text ──parse──► AST ──checks (against the Catalog)──► lowering ──► EventGraph

Pure: the engine reads the files and builds the catalog, then calls `compile_sources` (off the event loop); a
result with any error has no graph, so the engine keeps running the graph it has.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from dsl.ast import AlertTrigger, Notify, Rule, RuleFile
from dsl.catalog import Catalog
from dsl.checks import check_files
from dsl.diagnostics import Diagnostic, render_many
from dsl.graph import Action, CompiledRule, Condition, EventGraph, NotifyAction, RunAction
from dsl.parser import parse_recovering

# Bump when the canonical form changes meaning, so old and new fingerprints never compare equal by accident.
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class CompileResult:
    """The graph (None when anything is an error), every diagnostic sorted by place, and the texts."""

    graph: EventGraph | None
    diagnostics: tuple[Diagnostic, ...]
    sources: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return self.graph is not None

    def render_all(self) -> str:
        """Every diagnostic with its source line, separated by blank lines ("" when there are none)."""
        return render_many(self.diagnostics, dict(self.sources))


def compile_sources(sources: Sequence[tuple[str, str]], catalog: Catalog) -> CompileResult:
    """Compile `(path, text)` pairs, in the order given, against `catalog`, collecting every diagnostic."""
    texts: dict[str, str] = {}
    files: list[RuleFile] = []
    diags: list[Diagnostic] = []
    for path, text in sources:
        if path in texts:
            raise ValueError(f"source path given twice: {path}")
        texts[path] = text
        rule_file, problems = parse_recovering(text, path)
        files.append(rule_file)
        diags.extend(problems)
    diags.extend(check_files(files, catalog))
    diags.sort(key=lambda d: (d.span.path, d.span.line, d.span.col))
    failed = any(d.severity == "error" for d in diags)
    graph = None if failed else EventGraph(lower_rule(rule) for f in files for rule in f.rules)
    return CompileResult(graph=graph, diagnostics=tuple(diags), sources=MappingProxyType(texts))


def lower_rule(rule: Rule) -> CompiledRule:
    """The runnable form of a checked rule."""
    trigger = rule.trigger
    if isinstance(trigger, AlertTrigger):
        kind, command = "alert", None
        # Most selective first: the matcher stops at the first condition that fails.
        conditions = [Condition("alert.service", trigger.service)] if trigger.service is not None else []
        if trigger.severity is not None:
            conditions.append(Condition("alert.severity", trigger.severity))
        conditions.append(Condition("alert.status", trigger.status))
    else:
        kind, command = "command", trigger.name
        conditions = [Condition("command.name", trigger.name)]
    roles = tuple(clause.role for clause in rule.clauses)
    actions: tuple[Action, ...] = tuple(
        NotifyAction(team=a.team, buttons=a.buttons)
        if isinstance(a, Notify)
        else RunAction(a.script, a.timeout_s)
        for a in rule.actions
    )
    return CompiledRule(
        name=rule.name if rule.name is not None else rule.span.location,
        location=rule.span.location,
        kind=kind,
        command=command,
        required_roles=roles,
        actions=actions,
        fingerprint=fingerprint(kind, conditions, roles, actions),
        conditions=tuple(conditions),
    )


def fingerprint(
    kind: str, conditions: Sequence[Condition], roles: Sequence[str], actions: Sequence[Action]
) -> str:
    """sha256 of a canonical form of what a rule does: not its name, place, comments, or how it was spelt.

    Conditions and roles are sets (their order means nothing); actions keep their order (it is the run order).
    `firing` written or left out, and `sandboxed` written or not (`run` is always sandboxed), print the same.
    """
    canonical = {
        "v": _FINGERPRINT_VERSION,
        "kind": kind,
        "when": sorted([c.field, str(c.value)] for c in conditions),
        "roles": sorted(set(roles)),
        "do": [
            ["notify", a.team, a.buttons] if isinstance(a, NotifyAction) else ["run", a.script, a.timeout_s]
            for a in actions
        ],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
