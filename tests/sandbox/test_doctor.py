"""`herald sandbox doctor` on this host: every check passes and says what it found; a broken setting is a FAIL
line with its fix and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def _doctor(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "sandbox", "doctor"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_doctor_passes_on_a_set_up_host(config_file: Path) -> None:
    result = _doctor(config_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("podman", "runc", "sandbox user", "subuid/subgid", "podman service", "image", "trial run"):
        assert any(line.startswith("OK") and f" {check}:" in line for line in lines), (check, lines)
    assert "network=none" in result.stdout and "cap_drop=ALL" in result.stdout
    # How a run's memory is bounded on this host, as a total (issue 18 item 12), and the proof of the network filter.
    memory = next(line for line in lines if " memory:" in line)
    assert memory.startswith("OK") and ("memory cgroup of 256m" in memory or "of 256m" in memory), memory
    if "no memory cgroup" in memory:
        assert "at most 14 processes x 16m" in memory and "/dev/shm" in memory
    network = next(line for line in lines if " network filter:" in line)
    assert network.startswith("OK") and ("host addresses blocked" in network or "no trial" in network), network


def test_doctor_names_a_missing_image_and_its_fix(config_file: Path) -> None:
    config_file.write_text(config_file.read_text() + '\n[sandbox]\nimage = "localhost/herald-no-such-image:1"\n')
    result = _doctor(config_file.parent)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any("image" in line for line in failed), result.stdout
    assert "herald sandbox image build" in result.stdout
