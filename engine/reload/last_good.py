"""The last rule sources that compiled, kept in the data folder: a restart with a broken rule file still pages.

Saved (0600, like everything in the data folder) whenever rules are loaded at start or accepted by a reload; read by
`herald run` only when the rules on disk do not compile (and `--strict` is not given).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.core.private import write_private

FILE = "last-good-rules.json"


@dataclass(frozen=True)
class LastGood:
    saved: str  # when they were saved (ISO 8601, UTC)
    sources: list[tuple[str, str]]  # (path as shown in diagnostics, text), in compile order


def save(data_dir: Path, sources: Sequence[tuple[str, str]]) -> None:
    body = {"saved": datetime.now(UTC).isoformat(timespec="seconds"), "sources": [list(s) for s in sources]}
    write_private(data_dir / FILE, json.dumps(body))


def load(data_dir: Path) -> LastGood | None:
    """The saved sources, or None when there are none (a first start) or the file is unreadable."""
    try:
        body = json.loads((data_dir / FILE).read_text(encoding="utf-8"))
        return LastGood(saved=str(body["saved"]), sources=[(str(p), str(t)) for p, t in body["sources"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
