"""Engine-test fixtures: the sandbox user's real rootless Podman service."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from engine.core.errors import SandboxUnavailable
from engine.sandbox.podman_service import PodmanService

SANDBOX_USER = "sandboxer"


@pytest.fixture(scope="session")
def podman_url() -> Iterator[str]:
    """URL of the sandbox user's rootless Podman service, started for the session if it is not running.

    Skips (with the fix in the reason) where the host is not set up; set HERALD_REQUIRE_SANDBOX=1 in CI
    to turn that into a failure. Only a service this fixture started is stopped at the end. HERALD_TEST_PODMAN_URL
    (unix://...) gives the session a socket of its own, so other sessions starting and stopping the default one on
    the same machine cannot pull it away mid-run.
    """
    service = PodmanService()
    try:
        url = service.start(SANDBOX_USER, os.environ.get("HERALD_TEST_PODMAN_URL") or None)
    except SandboxUnavailable as exc:
        if os.environ.get("HERALD_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox host not ready: {exc}")
        pytest.skip(f"sandbox host not ready: {exc}")
    try:
        yield url
    finally:
        service.stop()
