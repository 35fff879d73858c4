"""Herald's rules compiler: rule files in, a compiled event graph (or every problem found) out.

Pure on purpose (DESIGN §1, STYLE "A pure core"): no asyncio, no file or network I/O, and nothing imported
from `engine` or `integrations`. The engine reads the rule files, builds a `Catalog` of its teams, roles and
scripts, and calls `compile_sources`; the CLI, the TUI and hot reload all show the same diagnostics.

Bad rules never raise: every problem, syntax or meaning, is a `Diagnostic` in the result, so this package
defines no exceptions of its own. Misuse of the API (the same path given twice) raises `ValueError`.

    compile_sources(sources, catalog) -> CompileResult(graph | None, diagnostics, sources)
    parse(text, path) -> (RuleFile | None, diagnostics)
    render(diagnostic, source_text) -> str
"""

from __future__ import annotations

from dsl.catalog import Catalog
from dsl.compiler import CompileResult, compile_sources
from dsl.diagnostics import Diagnostic, render
from dsl.graph import CompiledRule, EventGraph, NotifyAction, RunAction
from dsl.parser import parse

__all__ = [
    "Catalog",
    "CompileResult",
    "CompiledRule",
    "Diagnostic",
    "EventGraph",
    "NotifyAction",
    "RunAction",
    "compile_sources",
    "parse",
    "render",
]
