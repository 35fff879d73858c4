"""Escape-suite fixtures: the real sandbox, a scripts folder of attacks, and the summary table of outcomes.

Every test records one row (attempt | outcome | mechanism) with `record`; `pytest_terminal_summary` prints them
at the end of the session, so a run of `pytest tests/sandbox` ends with what was tried and what stopped it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient

from engine.sandbox.policy import host_id
from engine.sandbox.runner import Sandbox, SandboxConfig
from tests.engine.conftest import podman_url  # noqa: F401  (re-exported fixture: the real Podman service)
from tests.sandbox.attacks import ATTACKS

_ROWS: list[tuple[str, str, str, str]] = []  # attempt, outcome, mechanism, test result


@pytest.fixture(scope="session")
def attack_dir() -> Iterator[Path]:
    """The attack scripts, in a folder under /tmp the sandbox's run uids can read (pytest's tmp_path is 700)."""
    folder = Path(tempfile.mkdtemp(prefix="herald-escape-", dir="/tmp"))
    folder.chmod(0o755)
    for name, body in ATTACKS.items():
        (folder / name).write_text(body)
        (folder / name).chmod(0o644)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
async def sandbox(podman_url: str, attack_dir: Path) -> AsyncIterator[Sandbox]:  # noqa: F811
    sb = Sandbox(config=SandboxConfig(podman_url=podman_url, autostart=False), scripts_dir=attack_dir)
    await sb.start()
    assert sb.problem is None, sb.problem
    try:
        yield sb
    finally:
        await sb.close()


@pytest.fixture(scope="session")
def to_host_uid(podman_url: str) -> Callable[[int], int]:  # noqa: F811
    """Maps a container uid (as `id -u` prints it inside) to the host uid its processes have."""
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        uidmap = client.info()["host"]["idMappings"]["uidmap"]

    def convert(container_uid: int) -> int:
        uid = host_id(uidmap, container_uid)
        assert uid is not None, f"container uid {container_uid} is not mapped"
        return uid

    return convert


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    """Call once per test: what was attempted, what happened, and which protection did it."""

    def add(attempt: str, outcome: str, mechanism: str) -> None:
        _ROWS.append((attempt, outcome, mechanism, request.node.nodeid))

    return add


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        _FAILED.add(item.nodeid)


_FAILED: set[str] = set()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    rows = [(a, o if node not in _FAILED else f"TEST FAILED: {o}", m) for a, o, m, node in _ROWS]
    widths = [max(len(r[i]) for r in [("attempt", "outcome", "mechanism"), *rows]) for i in range(3)]
    widths[2] = min(widths[2], 90)
    terminalreporter.section("sandbox escape suite")
    line = " | ".join(h.ljust(w) for h, w in zip(("attempt", "outcome", "mechanism"), widths, strict=True))
    terminalreporter.write_line(line)
    terminalreporter.write_line("-+-".join("-" * w for w in widths))
    for row in rows:
        terminalreporter.write_line(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
