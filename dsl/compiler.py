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

from dsl.ast import CommandTrigger, Param, RuleFile, TeamDecl
from dsl.catalog import Catalog
from dsl.checks import check_files
from dsl.diagnostics import Diagnostic, render_many
from dsl.graph import EventGraph
from dsl.lower import FINGERPRINT_VERSION, lower_rule, rule_fingerprint
from dsl.parser import parse_recovering

__all__ = ["FINGERPRINT_VERSION", "CompileResult", "compile_sources", "rule_fingerprint"]


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


def compile_sources(sources: Sequence[tuple[str, str]], catalog: Catalog) -> CompileResult:
    """Compile `(path, text)` pairs, in the order given, against `catalog`, collecting every diagnostic."""
    with _collector_paused():
        return _compile(sources, catalog)


def _compile(sources: Sequence[tuple[str, str]], catalog: Catalog) -> CompileResult:
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
    graph = None
    if not failed:
        specs: dict[str, tuple[Param, ...]] = {}
        for rule_file in files:
            for rule in rule_file.rules:
                if isinstance(rule.trigger, CommandTrigger) and rule.trigger.params:
                    specs.setdefault(rule.trigger.name, rule.trigger.params)
        kind_fields: dict[str, Mapping[str, str]] = {}
        graph = EventGraph(
            lower_rule(rule, catalog, specs, kind_fields=kind_fields) for f in files for rule in f.rules
        )
    teams = tuple(team for f in files for team in f.teams)
    return CompileResult(graph=graph, diagnostics=tuple(diags), sources=MappingProxyType(texts), teams=teams)


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
