"""A run's memory is a total, not a per-process figure (issue 18 item 12): children that each stay under the old
per-process limit cannot add up past the run's memory. Real rootless Podman."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.sandbox.policy import memory_budget, parse_size
from engine.sandbox.runner import Sandbox, SandboxConfig, SandboxResult
from tests.support import REPO

Record = Callable[[str, str, str], None]
RUN_MEMORY = parse_size("256m")


async def _fork_memory(sb: Sandbox, children: int, doublings: int) -> SandboxResult:
    return await sb.run("fork_memory.sh", [str(children), str(doublings)], timeout_s=60,
                        task_id=f"mem-{uuid.uuid4().hex[:8]}", memory=RUN_MEMORY)


def _held(result: SandboxResult) -> int:
    """Bytes the children reported holding, all at the same time (each holds its string 10 s, past the run's end)."""
    return sum(int(n) for n in re.findall(r"^held (\d+)$", result.output, re.MULTILINE))


async def test_twelve_children_of_64_mib_cannot_exceed_the_runs_memory(sandbox: Sandbox, record: Record) -> None:
    # The attack: 12 children of 64 MiB each under `memory 256m`, 768 MiB in all.
    result = await _fork_memory(sandbox, 12, 26)
    mechanism = next(e for e in result.enforced if e.startswith("memory="))
    assert _held(result) <= RUN_MEMORY, result.output
    if "no cgroup" in mechanism:
        assert _held(result) == 0 and "out of memory" in result.output, result.output  # each child's share is 14m
        assert "in all (no cgroup): at most" in mechanism
    else:  # a memory cgroup: the kernel OOM-kills once the run's total is reached
        assert result.exit_code == 137 or "out of memory" in result.output
    record("12 children x 64 MiB under memory 256m", f"held {_held(result) >> 20} MiB in all; allocations refused",
           mechanism)


async def test_many_small_children_stop_at_the_process_budget(sandbox: Sandbox, record: Record) -> None:
    # 40 children of 4 MiB each (a size every process may hold): the run cannot have that many processes.
    result = await _fork_memory(sandbox, 40, 22)
    mechanism = next(e for e in result.enforced if e.startswith("memory="))
    held = _held(result)
    assert held <= RUN_MEMORY, result.output
    if "no cgroup" in mechanism:
        budget = memory_budget(RUN_MEMORY, SandboxConfig())
        assert f"processes: {budget.processes}, data kB: {budget.data // 1024}" in result.output
        assert "can't fork" in result.output, result.output
        assert 0 < held < budget.processes * 4 * 1024 * 1024
        assert budget.bound <= RUN_MEMORY
    record("40 children x 4 MiB under memory 256m", f"{held >> 20} MiB held, then 'can't fork'", mechanism)


def test_a_budget_with_too_few_processes_is_a_config_error(config_file: Path) -> None:
    config_file.write_text(config_file.read_text() + '\n[sandbox]\nmemory = "128m"\nprocess_memory = "64m"\n')
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--config", str(config_file)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode != 0
    assert "memory 128m leaves room for only 1 processes of 64m (after /tmp 16m and /dev/shm 1m)" in done.stderr
