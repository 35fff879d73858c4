"""Compile cost of the rules compiler: 10,000 rules end to end (target < 1 s), and parse throughput in lines/s.

    python benchmarks/dsl_compile.py

compile_ms is a compile from nothing (no CompileCache), the best of 5 (the machine is shared); the timer stops
when compile_sources returns, before its result is freed. parse_ms is parse_recovering alone. reload_ms is
what hot reload pays with a CompileCache: the same rules in 100 files, one of them changed, compiled again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import report  # noqa: E402
from dsl import Catalog, CompileCache, compile_sources  # noqa: E402
from dsl.parser import parse_recovering  # noqa: E402

CATALOG = Catalog(teams=frozenset({"ops", "dba"}), roles=frozenset({"admin"}), scripts=frozenset({"job.sh"}))


def rules(count: int) -> str:
    """A mix like a real rule set: one-liners and blocks, alerts with conditions, typed commands."""
    out = []
    for i in range(count):
        match i % 4:
            case 0:
                out.append(f"on alert severity critical from service{i} notify ops with buttons")
            case 1:
                out.append(f"rule r{i}:\n  on alert severity >= warning from svc{i}\n  when alert.labels.env = prod\n"
                           f"  dedupe by alert.fingerprint for 30m\n  notify dba saying \"{{alert.summary}}\"")
            case 2:
                out.append(f"on command cmd{i} <scope: db|files> require role admin "
                           f"run job.sh args \"{{command.scope}}\"")
            case _:
                out.append(f"on alert label team = t{i} when alert.service in [a, b] notify ops")
    return "\n".join(out) + "\n"


def best(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result  # freed outside the timed part
    return min(times)


def reload_with_cache(text: str) -> float:
    """The rules in 100 files; one file changed and all compiled again with the cache of the compile before."""
    files = in_files(text, 100)
    cache = CompileCache()
    assert compile_sources(files, CATALOG, cache=cache).ok
    times = []
    for round_ in range(5):
        path, body = files[len(files) // 2]
        files[len(files) // 2] = (path, body + f"on alert from reload{round_} notify ops\n")
        start = time.perf_counter()
        result = compile_sources(files, CATALOG, cache=cache)
        times.append(time.perf_counter() - start)
        assert result.ok, result.render_all()[:2000]
        del result
    return min(times)


def in_files(text: str, count: int) -> list[tuple[str, str]]:
    """`text` cut into `count` files of whole rules (a rule starts at a line in column 1)."""
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        if line[:1] in (" ", "\t") and pieces:
            pieces[-1] += line
        else:
            pieces.append(line)
    per = max(len(pieces) // count, 1)
    return [(f"rules/{i:03}.rules", "".join(pieces[at : at + per])) for i, at in enumerate(range(0, len(pieces), per))]


def main() -> None:
    rows = []
    for count in (1_000, 10_000):
        text = rules(count)
        lines = text.count("\n")
        result = compile_sources([("bench.rules", text)], CATALOG)
        assert result.graph is not None and len(result.graph.rules) == count, result.render_all()[:2000]
        del result
        compile_s = best(lambda text=text: compile_sources([("bench.rules", text)], CATALOG))
        parse_s = best(lambda text=text: parse_recovering(text, "bench.rules"))
        reload_s = reload_with_cache(text)
        rows.append([count, lines, round(compile_s * 1000, 1), round(parse_s * 1000, 1), round(lines / parse_s),
                     round(reload_s * 1000, 1)])
    report("dsl_compile", ["rules", "lines", "compile_ms", "parse_ms", "parse_lines_per_s", "reload_ms"], rows,
           target={"compile_10000_rules_ms": 1000})


if __name__ == "__main__":
    main()
