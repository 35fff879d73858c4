"""Helpers for the rules compiler's tests: a catalog like a small ops team's, and compile shortcuts."""

from __future__ import annotations

from dsl import Catalog, CompileResult, compile_sources

CATALOG = Catalog(
    teams=frozenset({"ops", "dba", "oncall"}),
    roles=frozenset({"admin", "operator"}),
    scripts=frozenset({"backup.sh", "restart-db.sh", "rotate-logs.sh"}),
)

CUSTOMER_ALERT_LINE = "on alert severity critical from database notify ops with buttons"
CUSTOMER_COMMAND_LINE = "on command backup require role admin run backup.sh sandboxed"


def compile_text(text: str, path: str = "rules/ops.rules", catalog: Catalog = CATALOG) -> CompileResult:
    return compile_sources([(path, text)], catalog)


def compile_ok(text: str, path: str = "rules/ops.rules", catalog: Catalog = CATALOG) -> CompileResult:
    """Compile and insist on success, showing the rendered diagnostics if it fails."""
    result = compile_text(text, path, catalog)
    assert result.graph is not None, result.render_all()
    assert result.diagnostics == (), result.render_all()
    return result


def catalog_with(*, teams: set[str]) -> Catalog:
    return Catalog(teams=frozenset(teams), roles=CATALOG.roles, scripts=CATALOG.scripts)
