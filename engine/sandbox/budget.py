"""A run's memory as one total: the sizes, the floor runc needs, and the split into processes x share.

Where a memory cgroup holds the run's total, the kernel keeps it. Where none does (rootless Podman on cgroup v1),
rlimits are per process, so the run's memory is split: at most `processes` processes (RLIMIT_NPROC of the run's own
uid), each with `data` (RLIMIT_DATA) and `stack` (RLIMIT_STACK), plus the tmpfs mounts (/tmp and /dev/shm, whose pages
are memory too). `budget_command` is the fixed wrapper that lowers the limits to that split before the script's first
line (runc itself needs the larger start-up limit). Pure: docs/sandbox.md explains the trade-off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# runc's own start-up (a Go program) runs under the run's RLIMIT_DATA before it execs the script; below ~80 MiB
# it fails with "cannot allocate memory" on this Podman (measured). Without a memory cgroup the start-up limit is the
# run's whole memory (one process holds it then) and a wrapper lowers it to the per-process share before the script
# runs; a run below this floor could not start at all, hence the minimum.
MIN_MEMORY = 128 * 1024 * 1024
# /dev/shm is a tmpfs like /tmp: its pages count against the run's memory, so it is kept small and counted.
SHM_SIZE = 1024 * 1024
# Without a memory cgroup each process's share is RLIMIT_DATA plus this much stack (RLIMIT_STACK).
PROCESS_STACK = 2 * 1024 * 1024
MIN_PROCESSES = 4  # fewer could not run a script with a pipeline; such a memory budget is refused
SIZE_RE = r"^[1-9][0-9]*[kmg]?$"
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(size: str | int) -> int:
    """Bytes in `size`: an int, or a string such as 256m, 1g, 65536 (binary units)."""
    if isinstance(size, bool):
        raise ValueError(f"not a size: {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"a size must be positive, got {size}")
        return size
    text = str(size).strip().lower()
    if not re.match(SIZE_RE, text):
        raise ValueError(f"not a size: {size!r} (use e.g. 256m, 1g or a number of bytes)")
    unit = text[-1] if text[-1] in "kmg" else ""
    return int(text.removesuffix(unit)) * _UNITS[unit]


def format_size(size: int) -> str:
    for unit in ("g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def check_memory(size: str | int) -> int:
    """Bytes of a memory limit; ValueError below the floor runc itself needs to start."""
    value = parse_size(size)
    if value < MIN_MEMORY:
        raise ValueError(f"memory {size!r} is below the minimum of {format_size(MIN_MEMORY)} "
                         "(runc needs about 80 MiB to start the container under the limit)")
    return value


@dataclass(frozen=True)
class MemoryBudget:
    """How a run's memory is split where no memory cgroup holds the total: processes x share, plus the tmpfs."""

    total: int
    processes: int  # RLIMIT_NPROC of the run's uid, lowered before the script starts
    data: int  # RLIMIT_DATA of each process
    stack: int  # RLIMIT_STACK of each process
    tmpfs: int  # /tmp and /dev/shm

    @property
    def bound(self) -> int:
        return self.processes * (self.data + self.stack) + self.tmpfs

    def split(self) -> str:
        return (f"at most {self.processes} processes x {format_size(self.data + self.stack)} (RLIMIT_NPROC, "
                f"RLIMIT_DATA {format_size(self.data)} + RLIMIT_STACK {format_size(self.stack)}) + /tmp and /dev/shm "
                f"{format_size(self.tmpfs)}")

    def describe(self) -> str:
        return f"memory={format_size(self.total)} in all (no cgroup): {self.split()}"


def split_memory(memory: int, *, tmpfs: int, share: int, pids: int, tmpfs_text: str = "") -> MemoryBudget:
    """Split `memory` into processes of `share` each (at most `pids`) after the tmpfs (/tmp, `tmpfs` bytes) and
    /dev/shm; ValueError when that leaves room for fewer than MIN_PROCESSES."""
    room = tmpfs + SHM_SIZE
    processes = min(pids, (memory - room) // share)
    if processes < MIN_PROCESSES:
        raise ValueError(
            f"memory {format_size(memory)} leaves room for only {max(processes, 0)} processes of "
            f"{format_size(share)} (after /tmp {tmpfs_text or format_size(tmpfs)} and /dev/shm "
            f"{format_size(SHM_SIZE)}), fewer than {MIN_PROCESSES}: give the run more memory, or lower [sandbox] "
            "process_memory or tmpfs_size")
    return MemoryBudget(memory, processes, share - PROCESS_STACK, PROCESS_STACK, room)


def budget_command(argv: list[str], budget: MemoryBudget) -> list[str]:
    """`argv` (["/bin/sh", script, *args]) behind a fixed wrapper that lowers the run's limits to its memory budget.

    busybox `ulimit` sets soft and hard limits alike, so the script cannot raise them again. The script and its
    arguments stay separate argv entries ($0 and "$@"): nothing of them is ever parsed by the wrapper's shell.
    """
    wrapper = (f"ulimit -d {budget.data // 1024} && ulimit -s {budget.stack // 1024} && "
               f"ulimit -u {budget.processes} && exec /bin/sh \"$0\" \"$@\"")
    return [argv[0], "-c", wrapper, *argv[1:]]
