"""Installing Herald builds its wheel without warnings from the build backend (the README's set-up installs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_the_wheel_builds_without_a_build_backend_warning(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so the build's egg-info and build/ folders stay out of the repository
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info",
                                                                 "build", ".herald", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "out"),
                             str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "BuildBackendWarning" not in output and "deprecated" not in output.lower(), \
        [line for line in output.splitlines() if "arning" in line or "deprecated" in line.lower()]
