"""Herald's rules compiler: rule files in, a compiled event graph (or every problem found) out.

Pure on purpose (DESIGN §1, STYLE "A pure core"): no asyncio, no file or network I/O, and nothing imported
from `engine` or `integrations`. The engine reads the rule files, builds a `Catalog` of what it provides (teams,
roles, scripts, trigger kinds and their fields, actions, stages), and calls `compile_sources`; the CLI, the TUI
and hot reload all show the same diagnostics.

Bad rules never raise: every problem, syntax or meaning, is a `Diagnostic` in the result. Exceptions:

    ValueError            misuse of the API (the same path given twice)
      FormatError         format_source on text with syntax errors (carries the diagnostics)

    compile_sources(sources, catalog, cache=None) -> CompileResult(graph | None, diagnostics, sources, teams)
    CompileCache()  (one per reloader: unchanged files are not parsed again, unchanged rules not lowered again)
    parse(text, path) -> (RuleFile | None, diagnostics)
    format_source(text, path) -> str
    render(diagnostic, source_text) -> str
    render_template(template, fields) -> str
    CompiledRule.matches(fields) / .explain(fields) / .bind_args(args)
"""

from __future__ import annotations

from dsl.args import CommandParam
from dsl.catalog import ACTION_KINDS, STAGE_KINDS, TRIGGER_FIELDS, Catalog
from dsl.compiler import CompileCache, CompileResult, compile_sources
from dsl.diagnostics import Diagnostic, render
from dsl.formatter import FormatError, format_source
from dsl.graph import CompiledRule, EventGraph
from dsl.parser import parse
from dsl.plan import (
    ButtonSpec,
    CheckDiskStage,
    ConfirmStage,
    DedupeStage,
    EmitAction,
    EscalateAction,
    EscalateStep,
    GroupStage,
    MissingSpec,
    NotifyAction,
    RateLimitStage,
    ReplyAction,
    RequireRoleStage,
    RunAction,
    ScheduleSpec,
    SilenceAction,
    SilenceWhereAction,
)
from dsl.templates import render_template

__all__ = [
    "ACTION_KINDS",
    "STAGE_KINDS",
    "TRIGGER_FIELDS",
    "ButtonSpec",
    "Catalog",
    "CheckDiskStage",
    "CommandParam",
    "CompileCache",
    "CompileResult",
    "CompiledRule",
    "ConfirmStage",
    "DedupeStage",
    "Diagnostic",
    "EmitAction",
    "EscalateAction",
    "EscalateStep",
    "EventGraph",
    "FormatError",
    "GroupStage",
    "MissingSpec",
    "NotifyAction",
    "RateLimitStage",
    "ReplyAction",
    "RequireRoleStage",
    "RunAction",
    "ScheduleSpec",
    "SilenceAction",
    "SilenceWhereAction",
    "compile_sources",
    "format_source",
    "parse",
    "render",
    "render_template",
]
