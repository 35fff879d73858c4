"""The package's promises: public names, purity (no I/O, no asyncio, nothing of ours), stable fingerprints."""

from __future__ import annotations

import builtins
import dataclasses
import gc
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import dsl
from dsl import CompileResult, compile_sources
from dsl.parser import release_parser
from tests.dsl.support import CATALOG, CUSTOMER_ALERT_LINE, CUSTOMER_COMMAND_LINE, compile_ok, compile_text


def test_public_names() -> None:
    assert set(dsl.__all__) >= {
        "Catalog", "CompileResult", "CompiledRule", "Diagnostic", "EventGraph", "NotifyAction", "RunAction",
        "compile_sources", "parse", "render", "format_source", "FormatError", "render_template",
    }  # fmt: skip
    for name in dsl.__all__:
        assert getattr(dsl, name) is not None


def test_importing_and_compiling_pulls_in_no_asyncio_network_or_other_herald_package() -> None:
    code = (
        "import sys, dsl\n"
        "r = dsl.compile_sources([('a.rules', 'on command x run y.sh')], "
        "dsl.Catalog(teams=frozenset(), roles=frozenset(), scripts=frozenset({'y.sh'})))\n"
        "assert r.graph is not None\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('asyncio', 'socket', 'engine', 'integrations', 'tui', 'aiohttp', 'pydantic'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_compiling_does_no_file_or_network_io(monkeypatch: pytest.MonkeyPatch) -> None:
    compile_ok(CUSTOMER_ALERT_LINE)  # the grammar (package data) is read once, on first use

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("dsl did I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    result = compile_text(f"{CUSTOMER_ALERT_LINE}\n{CUSTOMER_COMMAND_LINE}\non alert notfy x\n")
    assert len(result.diagnostics) == 1


def test_compile_result_keeps_the_sources_and_renders_nothing_when_clean() -> None:
    result = compile_ok(CUSTOMER_ALERT_LINE)
    assert isinstance(result, CompileResult)
    assert dict(result.sources) == {"rules/ops.rules": CUSTOMER_ALERT_LINE}
    assert result.render_all() == ""


def test_the_same_path_twice_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="given twice"):
        compile_sources([("a.rules", ""), ("a.rules", "")], CATALOG)


def test_empty_and_comment_only_files_compile_to_an_empty_graph() -> None:
    result = compile_sources([("a.rules", ""), ("b.rules", "# nothing yet\n\n   \n")], CATALOG)
    assert result.graph is not None
    assert result.graph.rules == ()


def prints(text: str) -> list[str]:
    graph = compile_ok(text).graph
    assert graph is not None
    return [rule.fingerprint for rule in graph.rules]


def test_fingerprint_ignores_place_comments_spelling_and_name() -> None:
    one_liner = prints(f"{CUSTOMER_COMMAND_LINE}\n")[0]
    assert len(one_liner) == 64 and int(one_liner, 16) >= 0
    assert prints(f"# moved down, with comments\n\n\n{CUSTOMER_COMMAND_LINE}   # here\n")[0] == one_liner
    assert prints("rule b:\n  on command backup\n  require role admin\n  run backup.sh\n")[0] == one_liner
    assert prints("on alert firing from db notify ops") == prints("on alert from db notify ops")


def test_fingerprint_changes_with_what_the_rule_does() -> None:
    base = prints(CUSTOMER_COMMAND_LINE)[0]
    variants = [
        "on command backups require role admin run backup.sh",
        "on command backup require role operator run backup.sh",
        "on command backup run backup.sh",
        "on command backup require role admin run backup.sh timeout 1h",
        "on command backup require role admin run restart-db.sh",
        "on command backup require role admin run backup.sh notify ops",
    ]
    seen = {base}
    for text in variants:
        (fingerprint,) = prints(text)
        assert fingerprint not in seen, text
        seen.add(fingerprint)
    # the order of actions is the order they run in, so it counts
    assert prints("on command x notify ops notify dba") != prints("on command x notify dba notify ops")


def test_a_compile_pauses_the_cyclic_collector_and_leaves_it_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = dsl.compiler.check_files

    def check_files(*args: object) -> object:
        seen.append(gc.isenabled())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dsl.compiler, "check_files", check_files)
    assert gc.isenabled()
    compile_ok(CUSTOMER_ALERT_LINE)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        compile_ok(CUSTOMER_ALERT_LINE)
        assert not gc.isenabled()  # someone else's choice stays
    finally:
        gc.enable()
    with pytest.raises(ValueError):
        compile_sources([("a", ""), ("a", "")], CATALOG)
    assert gc.isenabled()


def test_compiles_in_threads_share_one_pause() -> None:
    text = "\n".join(f"on alert from s{i} notify ops" for i in range(300))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: compile_text(text), range(8)))
    assert all(result.ok for result in results)
    assert gc.isenabled()


def test_quick_init_builds_what_the_dataclass_init_builds() -> None:
    """dsl.frozen swaps the __init__ of the AST's and plan's frozen dataclasses for a quicker one."""
    from dsl import ast, plan
    from dsl.frozen import DATACLASS_INIT

    assert ast.Span in DATACLASS_INIT and plan.RunAction in DATACLASS_INIT and dsl.CompiledRule in DATACLASS_INIT
    text = (
        "team web = chat \"w\"\n"
        "rule r:\n  on command x <a: int> [<b: duration = 5m>]\n  require role admin\n"
        "  when command.a > 3 and (command.b is set or command.user = @bob)\n  at most 2 per 1h per command.user\n"
        "  run backup.sh timeout 1h retry 2 backoff 30s args \"{command.a}\"\n  notify web with buttons ack\n"
        "on alert severity >= warning label env =~ /pr/ notify ops saying \"{alert.name}\"\n"
    )
    graph = compile_ok(text).graph
    rule_file, _ = dsl.parse(text, "p")
    assert graph is not None and rule_file is not None
    seen: set[type] = set()
    todo: list[object] = [rule_file, *graph.rules]
    while todo:
        node = todo.pop()
        if isinstance(node, tuple | list):
            todo.extend(node)
        if type(node) not in DATACLASS_INIT:
            continue
        seen.add(type(node))
        values = {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.init}  # type: ignore[arg-type]
        again = object.__new__(type(node))
        DATACLASS_INIT[type(node)](again, **values)
        assert again == node and repr(again) == repr(node)
        assert type(node)(**values) == node
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(node, next(iter(values)), None)
        todo.extend(values.values())
    assert {ast.Span, ast.Rule, ast.RunScript, ast.When, ast.Compare, plan.RunAction, dsl.CompiledRule} <= seen


def test_a_released_parser_is_built_again_by_the_next_compile() -> None:
    """`herald run` releases the parser after its start-up compile; a reload then compiles as before."""
    compile_ok(CUSTOMER_ALERT_LINE)
    release_parser()
    result = compile_text("on alert notify ops\non alert from\n")
    assert result.graph is None and [d.span.line for d in result.diagnostics] == [2], result.render_all()
    compile_ok(CUSTOMER_ALERT_LINE)
