"""The dependency picture of docs/architecture.md, enforced: who may import whom, and no import cycles.

    dsl           imports nothing of ours (a pure compiler)
    engine        never imports tui/ or a named integration
    integrations  import only the plugin facade (`engine.plugin`), never each other
    tui           imports only the client API (`engine.client`); its command registration (tui/cli.py) also the
                  CLI's shared helpers (`engine.cli.common`), as every command group does
    no module of ours is part of an import cycle, counting imports inside functions and under TYPE_CHECKING

Imports are read from the source with `ast`, so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("dsl", "engine", "integrations", "tui")


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours `path` imports (a `from pkg import name` of a submodule counts as that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (REPO / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (REPO / sub.replace(".", "/") / "__init__.py").exists() else node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def _sources(*packages: str) -> dict[str, tuple[Path, set[str]]]:
    return {_module(p): (p, _imports(p)) for package in packages for p in sorted((REPO / package).rglob("*.py"))}


ALL = _sources(*OURS)


def _violations(prefix: str, allowed) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{module} imports {name}" for module, (_, names) in ALL.items()
            if module == prefix or module.startswith(prefix + ".")
            for name in sorted(names) if not allowed(module, name)]


def test_dsl_imports_nothing_of_ours() -> None:
    assert _violations("dsl", lambda _, name: name.startswith("dsl")) == []


def test_the_engine_never_imports_the_tui_or_an_integration() -> None:
    assert _violations("engine", lambda _, name: name.split(".")[0] in ("engine", "dsl")) == []


def test_integrations_import_only_the_plugin_facade_and_never_each_other() -> None:
    def allowed(module: str, name: str) -> bool:
        own = ".".join(module.split(".")[:2])
        return name == "engine.plugin" or name == own or name.startswith(own + ".")

    assert _violations("integrations", allowed) == []


def test_the_tui_imports_only_the_client_api() -> None:
    def allowed(module: str, name: str) -> bool:
        if name.startswith(("tui", "engine.client")):
            return True
        return module == "tui.cli" and name == "engine.cli.common"

    assert _violations("tui", allowed) == []


def test_the_test_connector_is_written_against_the_plugin_facade_only() -> None:
    names = set().union(*(_imports(p) for p in (REPO / "tests" / "connectors" / "loopchat").rglob("*.py")))
    assert {n for n in names if n.startswith("engine")} == {"engine.plugin"}


def test_no_module_of_ours_is_in_an_import_cycle() -> None:
    graph = {module: {n for n in names if n in ALL and n != module} for module, (_, names) in ALL.items()}
    cycles, index, low, stack, on_stack, counter = [], {}, {}, [], set(), [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("package", ["core", "runs", "delivery", "intake", "tasks", "sandbox", "security", "reload",
                                     "plugin", "client", "server", "cli", "testing"])
def test_every_engine_room_says_what_it_is_for(package: str) -> None:
    init = REPO / "engine" / package / "__init__.py"
    assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"engine/{package} has no docstring"


def test_discovering_integrations_imports_no_platform_sdk() -> None:
    """Every engine discovers every installed integration to read its manifest; a platform's SDK (matrix-nio and
    its crypto, slack_sdk, PyNaCl: ~18 MiB resident together) is imported only when its platform is configured."""
    probe = ("import sys; from engine.plugin.discovery import discover; discover(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'nio', 'vodozemac', 'slack_sdk', 'nacl'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"discover() imported {out.strip()}"
