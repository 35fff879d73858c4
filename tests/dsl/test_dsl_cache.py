"""CompileCache: a reload reuses the parse of unchanged files and the lowering of unchanged rules, and gets the
same result as a compile from nothing."""

from __future__ import annotations

import pytest

import dsl.compiler
from dsl import Catalog, CompileCache, CompileResult, compile_sources
from tests.dsl.support import CATALOG

OPS = (
    "on alert severity critical from database notify ops with buttons\n"
    "rule b:\n  on command backup <s: db|files>\n  run backup.sh\n"
)
MORE = "on command backup require role admin notify ops\non button ack notify dba\n"


def same(a: CompileResult, b: CompileResult) -> None:
    assert a.diagnostics == b.diagnostics and a.teams == b.teams and dict(a.sources) == dict(b.sources)
    assert (a.graph is None) == (b.graph is None)
    if a.graph is not None and b.graph is not None:
        assert [(r.name, r.fingerprint, r.actions, r.stages, r.params, r.conditions) for r in a.graph.rules] == [
            (r.name, r.fingerprint, r.actions, r.stages, r.params, r.conditions) for r in b.graph.rules
        ]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = dsl.compiler.parse_recovering

    def parse_recovering(text: str, path: str) -> object:
        seen.append(path)
        return real(text, path)

    monkeypatch.setattr(dsl.compiler, "parse_recovering", parse_recovering)
    return seen


def test_an_unchanged_reload_parses_and_lowers_nothing_again(parses: list[str]) -> None:
    cache = CompileCache()
    sources = [("a.rules", OPS), ("b.rules", MORE)]
    first = compile_sources(sources, CATALOG, cache=cache)
    again = compile_sources(sources, CATALOG, cache=cache)
    same(again, compile_sources(sources, CATALOG))
    assert parses == ["a.rules", "b.rules", "a.rules", "b.rules"]  # the last two: the compile without a cache
    assert first.graph is not None and again.graph is not None
    assert all(x is y for x, y in zip(first.graph.rules, again.graph.rules, strict=True))


def test_a_changed_file_is_parsed_again_and_only_its_rules_lowered_again(parses: list[str]) -> None:
    cache = CompileCache()
    first = compile_sources([("a.rules", OPS), ("b.rules", MORE)], CATALOG, cache=cache)
    changed = MORE.replace("notify dba", "notify ops")
    again = compile_sources([("a.rules", OPS), ("b.rules", changed)], CATALOG, cache=cache)
    same(again, compile_sources([("a.rules", OPS), ("b.rules", changed)], CATALOG))
    assert parses[:3] == ["a.rules", "b.rules", "b.rules"]
    assert first.graph is not None and again.graph is not None
    assert first.graph.rules[0] is again.graph.rules[0] and first.graph.rules[1] is again.graph.rules[1]
    assert first.graph.rules[3] is not again.graph.rules[3]


def test_another_catalog_or_another_argument_spec_lowers_again() -> None:
    cache = CompileCache()
    first = compile_sources([("a.rules", OPS), ("b.rules", MORE)], CATALOG, cache=cache)
    wider = Catalog(teams=CATALOG.teams, roles=CATALOG.roles | {"auditor"}, scripts=CATALOG.scripts)
    other = compile_sources([("a.rules", OPS), ("b.rules", MORE)], wider, cache=cache)
    assert first.graph is not None and other.graph is not None
    assert all(x is not y for x, y in zip(first.graph.rules, other.graph.rules, strict=True))
    # 'backup' in b.rules takes its arguments from a.rules; when a.rules declares none, b's rule changes too
    plain = OPS.replace(" <s: db|files>", "")
    after = compile_sources([("a.rules", plain), ("b.rules", MORE)], wider, cache=cache)
    same(after, compile_sources([("a.rules", plain), ("b.rules", MORE)], wider))
    assert after.graph is not None and after.graph.rules[2].params == () and other.graph.rules[2].params != ()


def test_errors_are_the_same_with_a_cache_and_a_fixed_file_compiles() -> None:
    cache = CompileCache()
    broken = [("a.rules", OPS + "on alert notfy ops\n"), ("b.rules", MORE + "on alert notify nobody\n")]
    for _ in range(2):
        same(compile_sources(broken, CATALOG, cache=cache), compile_sources(broken, CATALOG))
    fixed = compile_sources([("a.rules", OPS), ("b.rules", MORE)], CATALOG, cache=cache)
    same(fixed, compile_sources([("a.rules", OPS), ("b.rules", MORE)], CATALOG))
    assert fixed.ok
