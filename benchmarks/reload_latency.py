"""Hot reload latency: from a rule file's save to the new graph being live, at 10 and 10,000 rules.

A real engine (in-process, real file watcher) runs the rules folder; each round changes one rule in one file and
times until the engine has swapped in the new version (a RulesView on the bus). `watch` is the whole path a user
sees: the watcher's debounce and quiet spell, reading the tree, compiling off the event loop, the swap. `api` is
`Engine.reload()` called right after the save: the same transaction without the debounce.

    python benchmarks/reload_latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import report  # noqa: E402
from engine.client.snapshots import RulesView  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.reload.reloader import QUIET_S, WATCH_STEP_MS  # noqa: E402
from engine.reload.rules import compile_paths  # noqa: E402
from engine.server.app import Engine  # noqa: E402

FILES = 10


def rule(i: int, marker: str = "") -> str:
    """A mix of one-liners and blocks, every construct the runtime runs."""
    if i % 2:
        return f'on alert severity critical from service{i} notify ops saying "{marker}{{alert.summary}}"\n'
    return (f"rule r{i}:\n  on alert severity >= warning from svc{i}\n  when alert.labels.env = prod\n"
            f'  notify ops saying "{marker}{{alert.name}}"\n')


def write_rules(folder: Path, count: int) -> list[Path]:
    per_file = max(count // FILES, 1)
    paths = []
    for f in range(min(FILES, count)):
        path = folder / f"bench{f:02}.rules"
        path.write_text("".join(rule(i) for i in range(f * per_file, (f + 1) * per_file)))
        paths.append(path)
    return paths


async def wait_version(sub, version: int) -> None:  # type: ignore[no-untyped-def]
    while True:
        update = await sub.queue.get()
        if isinstance(update, RulesView) and update.version >= version:
            return


async def measure(count: int, rounds: int) -> list[object]:
    work = Path(tempfile.mkdtemp(prefix="herald-reload-bench-"))
    try:
        (work / "rules" / "scripts").mkdir(parents=True)
        paths = write_rules(work / "rules", count)
        (work / "herald.toml").write_text('data_dir = "data"\nrules_dir = "rules"\n[http]\nport = 0\n')
        config = load_config(work / "herald.toml")
        result = compile_paths([config.rules_dir], config)
        assert result.graph is not None and len(result.graph.rules) == count, result.render_all()[:2000]
        engine = Engine(config, result.graph, teams=result.teams, integrations=[])
        await engine.start()
        sub, unsubscribe = engine.bus.subscribe(capacity=10_000)
        timings: dict[str, list[float]] = {"watch": [], "api": []}
        try:
            target = paths[0]
            original = target.read_text()
            for n in range(rounds * 2):
                how = "watch" if n % 2 == 0 else "api"
                text = original.replace("saying \"", f"saying \"{n} ", 1)
                version = engine.runtime.graph_version + 1
                start = time.perf_counter()
                target.write_text(text)
                if how == "api":
                    outcome = await engine.reload(trigger="bench")
                    assert outcome.status in ("reloaded", "unchanged"), outcome
                await asyncio.wait_for(wait_version(sub, version), 60)
                timings[how].append(time.perf_counter() - start)
                await asyncio.sleep(QUIET_S * 3)  # let the watcher see the api round's save and find it unchanged
                while not sub.queue.empty():
                    sub.queue.get_nowait()
        finally:
            unsubscribe()
            await engine.stop()
        rows: list[object] = []
        for how, values in timings.items():
            ms = sorted(v * 1000 for v in values)
            rows.append([count, how, len(ms), round(statistics.median(ms), 1), round(ms[0], 1), round(ms[-1], 1)])
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for count in (10, 10_000):
        rows.extend(await measure(count, rounds))
    report("reload_latency (save -> new graph live)", ["rules", "trigger", "rounds", "median_ms", "min_ms", "max_ms"],
           rows, watcher={"step_ms": WATCH_STEP_MS, "quiet_s": QUIET_S})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
