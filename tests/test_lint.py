"""The code stays honest outside CI too (issue 20 item 16): `.ci/run` lints and type-checks every package, and the
README's test command fails when ruff or mypy would (both are fast once their caches are warm)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.support import REPO

PACKAGES = ["engine", "dsl", "integrations", "tui"]


def test_ci_runs_ruff_and_mypy_on_every_package_before_the_tests() -> None:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ruff = next(i for i, line in enumerate(lines) if "ruff check" in line)
    mypy = next(i for i, line in enumerate(lines) if "-m mypy" in line)
    tests = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert ruff < tests and mypy < tests
    assert all(package in lines[ruff].split() for package in [*PACKAGES, "tests", "benchmarks"])
    assert lines[mypy].split()[-len(PACKAGES):] == PACKAGES
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["mypy"]["files"] == PACKAGES


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *PACKAGES, "tests", "benchmarks"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", *PACKAGES], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
