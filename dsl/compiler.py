"""The whole pipeline: rule files in, `CompileResult(graph | None, diagnostics)` out.

    text ──parse──► AST ──checks (against the Catalog)──► lowering ──► EventGraph

Pure: the engine reads the files and builds the catalog, then calls `compile_sources` (off the event loop); a
result with any error has no graph, so the engine keeps running the graph it has.

CPython's cyclic garbage collector is paused while a compile runs. A compile makes about a hundred objects
per rule that live until it ends (AST, plan, closures), and the collector, which runs again each time the
heap has grown by a quarter, would walk that growing heap over and over: 40-50% of the time of compiling
10,000 rules. Nothing is leaked by the pause: reference counting frees as usual, and any reference cycle made
meanwhile is found by the collector's next run after the compile. Compiles in several threads share one pause.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from dsl.ast import CommandTrigger, Param, Rule, RuleFile, TeamDecl
from dsl.catalog import Catalog
from dsl.checks import check_files
from dsl.diagnostics import Diagnostic, render_many
from dsl.graph import CompiledRule, EventGraph
from dsl.lower import FINGERPRINT_VERSION, lower_rule, rule_fingerprint
from dsl.parser import parse_recovering

__all__ = ["FINGERPRINT_VERSION", "CompileCache", "CompileResult", "compile_sources", "rule_fingerprint"]


@dataclass(frozen=True)
class CompileResult:
    """The graph (None when anything is an error), every diagnostic sorted by place, the texts and the teams
    declared in rule files (the engine adds them to its targets)."""

    graph: EventGraph | None
    diagnostics: tuple[Diagnostic, ...]
    sources: Mapping[str, str]
    teams: tuple[TeamDecl, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.graph is not None

    def render_all(self) -> str:
        """Every diagnostic with its source line, separated by blank lines ("" when there are none)."""
        return render_many(self.diagnostics, dict(self.sources))


def compile_sources(
    sources: Sequence[tuple[str, str]], catalog: Catalog, *, cache: CompileCache | None = None
) -> CompileResult:
    """Compile `(path, text)` pairs, in the order given, against `catalog`, collecting every diagnostic.

    With a `cache` (one per reloader, kept between its compiles), a file whose text is unchanged is not parsed
    again and a rule that is unchanged (same file text, catalog and command arguments) is not lowered again;
    the checks, which look across all files, always run.
    """
    with _collector_paused():
        return _compile(sources, catalog, cache)


class CompileCache:
    """What the next compile can reuse from the last: each file's parse by (path, text), and each rule's
    lowering by the rule (the very object the kept parse holds), its command arguments and the catalog.

    Holds only what the last compile used, so it is as big as one compile. Not for two threads at once.
    """

    def __init__(self) -> None:
        self.parsed: dict[tuple[str, str], tuple[RuleFile, list[Diagnostic]]] = {}
        self.catalog: Catalog | None = None
        self.lowered: dict[int, tuple[Rule, tuple[Param, ...], CompiledRule]] = {}


def _compile(sources: Sequence[tuple[str, str]], catalog: Catalog, cache: CompileCache | None) -> CompileResult:
    texts: dict[str, str] = {}
    files: list[RuleFile] = []
    diags: list[Diagnostic] = []
    parsed: dict[tuple[str, str], tuple[RuleFile, list[Diagnostic]]] = {}
    for path, text in sources:
        if path in texts:
            raise ValueError(f"source path given twice: {path}")
        texts[path] = text
        done = cache.parsed.get((path, text)) if cache is not None else None
        rule_file, problems = done if done is not None else parse_recovering(text, path)
        parsed[path, text] = (rule_file, problems)
        files.append(rule_file)
        diags.extend(problems)
    if cache is not None:
        cache.parsed = parsed
    diags.extend(check_files(files, catalog))
    diags.sort(key=lambda d: (d.span.path, d.span.line, d.span.col))
    failed = any(d.severity == "error" for d in diags)
    graph = None
    if not failed:
        specs: dict[str, tuple[Param, ...]] = {}
        for rule_file in files:
            for rule in rule_file.rules:
                if isinstance(rule.trigger, CommandTrigger) and rule.trigger.params:
                    specs.setdefault(rule.trigger.name, rule.trigger.params)
        kind_fields: dict[str, Mapping[str, str]] = {}
        if cache is None:
            graph = EventGraph(
                lower_rule(rule, catalog, specs, kind_fields=kind_fields) for f in files for rule in f.rules
            )
        else:
            graph = EventGraph(_lower_cached(files, catalog, specs, kind_fields, cache))
    teams = tuple(team for f in files for team in f.teams)
    return CompileResult(graph=graph, diagnostics=tuple(diags), sources=MappingProxyType(texts), teams=teams)


def _lower_cached(
    files: Sequence[RuleFile],
    catalog: Catalog,
    specs: Mapping[str, tuple[Param, ...]],
    kind_fields: dict[str, Mapping[str, str]],
    cache: CompileCache,
) -> list[CompiledRule]:
    """Each rule lowered, or taken from `cache` when its rule object, arguments and the catalog are the same."""
    if cache.catalog != catalog:
        cache.catalog, cache.lowered = catalog, {}
    lowered: dict[int, tuple[Rule, tuple[Param, ...], CompiledRule]] = {}
    out: list[CompiledRule] = []
    for rule_file in files:
        for rule in rule_file.rules:
            trigger = rule.trigger
            params = specs.get(trigger.name, trigger.params) if isinstance(trigger, CommandTrigger) else ()
            kept = cache.lowered.get(id(rule))
            if kept is not None and kept[0] is rule and kept[1] == params:
                compiled = kept[2]
            else:
                compiled = lower_rule(rule, catalog, specs, kind_fields=kind_fields)
            lowered[id(rule)] = (rule, params, compiled)
            out.append(compiled)
    cache.lowered = lowered
    return out


class _Pause:
    """How many compiles are running, and whether the first of them turned the collector off."""

    lock = threading.Lock()
    running = 0
    turned_off = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the block runs (unless someone else had turned it off)."""
    with _Pause.lock:
        if _Pause.running == 0:
            _Pause.turned_off = gc.isenabled()
            gc.disable()
        _Pause.running += 1
    try:
        yield
    finally:
        with _Pause.lock:
            _Pause.running -= 1
            if _Pause.running == 0 and _Pause.turned_off:
                gc.enable()
