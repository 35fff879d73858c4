"""The README's test command works in a fresh clone with nothing beside it: every file a test reads is in the
repository, so a copy of the project's files alone collects the whole suite without an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def _project_files() -> list[str]:
    """The files a clone would hold (tracked or new, not ignored), as they are in this working tree now."""
    listing = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: nothing to compare a clone with")
    return [name for name in listing.stdout.split("\0") if name and (REPO / name).is_file()]


def test_a_copy_of_the_repository_alone_collects_every_test(tmp_path: Path) -> None:
    # Two levels down, so a test that climbs out of its clone (`parents[3] / "shared"`) finds nothing there either.
    clone = tmp_path / "nothing-beside" / "herald"
    for name in _project_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "error" not in result.stdout.splitlines()[-1].lower()
