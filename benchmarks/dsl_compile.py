"""Compile cost of the rules compiler: 10,000 rules end to end (target < 1 s), and parse throughput in lines/s.

    python benchmarks/dsl_compile.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import report  # noqa: E402
from dsl import Catalog, compile_sources  # noqa: E402
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


def best(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = []
    for count in (1_000, 10_000):
        text = rules(count)
        lines = text.count("\n")
        result = compile_sources([("bench.rules", text)], CATALOG)
        assert result.graph is not None and len(result.graph.rules) == count, result.render_all()[:2000]
        compile_s = best(lambda text=text: compile_sources([("bench.rules", text)], CATALOG))
        parse_s = best(lambda text=text: parse_recovering(text, "bench.rules"))
        rows.append([count, lines, round(compile_s * 1000, 1), round(parse_s * 1000, 1), round(lines / parse_s)])
    report("dsl_compile", ["rules", "lines", "compile_ms", "parse_ms", "parse_lines_per_s"], rows,
           target={"compile_10000_rules_ms": 1000})


if __name__ == "__main__":
    main()
