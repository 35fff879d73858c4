"""Describe the machine a benchmark ran on, and print results as a table plus one JSON object."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem_kib = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(name: str, columns: Sequence[str], rows: Sequence[Sequence[object]], **extra: object) -> None:
    """Print a plain table, then one line of JSON with the machine, the rows and any extra fields."""
    info = machine()
    print(f"{name} — {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    widths = [max(len(str(c)), *(len(_cell(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(_cell(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print(json.dumps({"benchmark": name, "machine": info,
                      "results": [dict(zip(columns, row, strict=True)) for row in rows], **extra}))


def _cell(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)
