"""Match cost per event at 10, 1,000 and 10,000 rules (targets: < 20 us at 10,000, and <= 3x the cost at 10).

    python benchmarks/dsl_match.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import report  # noqa: E402
from dsl import Catalog, compile_sources  # noqa: E402

CATALOG = Catalog(teams=frozenset({"ops"}), roles=frozenset({"admin"}), scripts=frozenset({"job.sh"}))
SEVERITIES = ("info", "warning", "error", "critical")


def graph_of(count: int):  # type: ignore[no-untyped-def]
    lines = []
    for i in range(count):
        if i % 3 == 0:
            lines.append(f"on command cmd{i} notify ops")
        elif i % 3 == 1:
            lines.append(f"on alert severity {SEVERITIES[i % 4]} from svc{i} when alert.labels.env = prod notify ops")
        else:
            lines.append(f"on alert severity >= warning from svc{i} notify ops")
    result = compile_sources([("bench.rules", "\n".join(lines))], CATALOG)
    assert result.graph is not None, result.render_all()[:2000]
    return result.graph


def events(count: int, rules: int) -> list[tuple[str, dict[str, object]]]:
    rng = random.Random(7)
    out: list[tuple[str, dict[str, object]]] = []
    for _ in range(count):
        i = rng.randrange(rules)
        if rng.random() < 0.3:
            out.append(("command", {"command.name": f"cmd{i}", "command.args": ()}))
        else:
            out.append(("alert", {"alert.status": "firing", "alert.severity": rng.choice(SEVERITIES),
                                  "alert.service": f"svc{i}", "alert.labels": {"env": "prod"}}))
    return out


def per_event_us(rules: int, n: int = 200_000) -> tuple[float, int]:
    graph = graph_of(rules)
    evs = events(n, rules)
    match = graph.match
    best = float("inf")
    hits = 0
    for _ in range(3):
        hits = 0
        start = time.perf_counter()
        for kind, fields in evs:
            hits += len(match(kind, fields))
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6, hits


def main() -> None:
    rows = []
    base = None
    for rules in (10, 1_000, 10_000):
        us, hits = per_event_us(rules)
        base = base or us
        rows.append([rules, round(us, 2), round(us / base, 2), hits])
    report("dsl_match", ["rules", "us_per_event", "vs_10_rules", "matches"], rows,
           target={"us_per_event_at_10000": 20, "max_ratio_vs_10": 3})


if __name__ == "__main__":
    main()
