"""What a crash leaves in the sandbox, against the real rootless Podman of user `sandboxer`: an owner's containers are
found (and no one else's), removed, or adopted: waited for, their exit code and output read, killed at the timeout.

Containers are made by hand with the labels Herald's own carry, in each state a crash can leave one in: created and
never started, running, exited.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient
from podman.errors import NotFound

from engine.sandbox.policy import DEFAULT_IMAGE
from engine.sandbox.runner import RunStart, Sandbox, SandboxConfig
from tests.engine.test_sandbox import scripts_dir  # noqa: F401  (fixture: a scripts folder the sandbox can read)


@pytest.fixture
def owner() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def podman(podman_url: str) -> Iterator[PodmanClient]:
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        yield client


@pytest.fixture
def made(podman: PodmanClient) -> Iterator[list[str]]:
    """Ids of the containers a test made by hand; whatever is left of them is removed after it."""
    ids: list[str] = []
    yield ids
    for container_id in ids:
        try:
            podman.containers.get(container_id).kill(signal="SIGKILL")
        except Exception:  # noqa: BLE001  (gone or not running: either is fine here)
            pass
        try:
            podman.containers.remove(container_id, force=True)
        except NotFound:
            pass


@pytest.fixture
async def sandbox(podman_url: str, scripts_dir: Path, owner: str) -> AsyncIterator[Sandbox]:  # noqa: F811
    sb = Sandbox(config=SandboxConfig(podman_url=podman_url, autostart=False), scripts_dir=scripts_dir, owner=owner)
    await sb.start()
    assert sb.problem is None, sb.problem
    try:
        yield sb
    finally:
        await sb.close()


def make(podman: PodmanClient, made: list[str], *, labels: dict[str, str], script: str = "sleep 300",
         start: bool = True, wait: bool = False) -> str:
    spec: dict[str, Any] = {"image": DEFAULT_IMAGE, "command": ["/bin/sh", "-c", script],
                            "netns": {"nsmode": "none"}, "labels": {"app": "herald", **labels}}
    response = podman.api.post("/containers/create", data=json.dumps(spec),
                               headers={"content-type": "application/json"})
    response.raise_for_status()
    container_id: str = response.json()["Id"]
    made.append(container_id)
    if start:
        ctr = podman.containers.get(container_id)
        ctr.start()
        if wait:
            ctr.wait(condition="exited", interval="10ms")
    return container_id


def exists(podman: PodmanClient, container_id: str) -> bool:
    return bool(podman.containers.exists(container_id))


def state(podman: PodmanClient, container_id: str) -> str:
    return str(podman.containers.get(container_id).attrs["State"]["Status"])


async def test_leftovers_of_this_owner_are_found_and_removed_and_no_one_elses(
    sandbox: Sandbox, podman: PodmanClient, made: list[str], owner: str
) -> None:
    def setup() -> dict[str, str]:
        return {
            "created": make(podman, made, labels={"herald.owner": owner, "herald.task": "t-created",
                                                  "herald.attempt": "1"}, start=False),
            "running": make(podman, made, labels={"herald.owner": owner, "herald.task": "t-running",
                                                  "herald.attempt": "2"}),
            "exited": make(podman, made, labels={"herald.owner": owner}, script="exit 4", wait=True),
            "other owner": make(podman, made, labels={"herald.owner": f"{owner}-other"}),
            "no owner": make(podman, made, labels={}, start=False),
        }

    ids = await asyncio.to_thread(setup)
    found = {left.container_id: left for left in await sandbox.leftovers()}
    assert set(found) == {ids["created"], ids["running"], ids["exited"]}
    assert not found[ids["created"]].started and found[ids["created"]].state == "created"
    running = found[ids["running"]]
    assert running.started and running.state == "running"
    assert (running.task_id, running.attempt) == ("t-running", 2)
    assert found[ids["exited"]].started and found[ids["exited"]].task_id is None

    started = time.monotonic()
    assert await sandbox.remove_leftovers() == 3
    assert time.monotonic() - started < 8  # killed first: a forced remove would wait 10 s for sh to stop
    assert await sandbox.leftovers() == []
    for name in ("created", "running", "exited"):
        assert not await asyncio.to_thread(exists, podman, ids[name]), name
    assert await asyncio.to_thread(state, podman, ids["other owner"]) == "running"
    assert await asyncio.to_thread(exists, podman, ids["no owner"])


async def test_an_adopted_container_is_waited_for_and_its_result_read(
    sandbox: Sandbox, podman: PodmanClient, made: list[str], owner: str
) -> None:
    labels = {"herald.owner": owner, "herald.task": "t-adopt", "herald.attempt": "1"}
    container_id = await asyncio.to_thread(make, podman, made, labels=labels,
                                           script="echo one; sleep 2; echo two >&2; exit 3")
    [left] = await sandbox.leftovers()
    assert left.container_id == container_id and left.started

    result = await sandbox.adopt(left, timeout_s=60)

    assert (result.exit_code, result.timed_out) == (3, False)
    assert result.output == "one\ntwo\n"
    assert 1.5 < result.duration_s < 10, result.duration_s
    assert result.container_id == container_id
    # Kept until its result is stored; then removed on request.
    assert await asyncio.to_thread(state, podman, container_id) == "exited"
    assert await sandbox.leftovers() == []  # adopted: no longer someone else's leftover
    await sandbox.remove(container_id)
    assert not await asyncio.to_thread(exists, podman, container_id)


async def test_an_adopted_container_that_already_exited_gives_its_result_at_once(
    sandbox: Sandbox, podman: PodmanClient, made: list[str], owner: str
) -> None:
    labels = {"herald.owner": owner, "herald.task": "t-done", "herald.attempt": "1"}
    await asyncio.to_thread(make, podman, made, labels=labels, script="echo finished while nobody watched",
                            wait=True)
    [left] = await sandbox.leftovers()
    started = time.monotonic()
    result = await sandbox.adopt(left, timeout_s=60)
    assert time.monotonic() - started < 5
    assert (result.exit_code, result.output) == (0, "finished while nobody watched\n")
    await sandbox.remove(left.container_id)


async def test_an_adopted_container_is_killed_at_its_timeout_counted_from_its_start(
    sandbox: Sandbox, podman: PodmanClient, made: list[str], owner: str
) -> None:
    labels = {"herald.owner": owner, "herald.task": "t-slow", "herald.attempt": "1"}
    container_id = await asyncio.to_thread(make, podman, made, labels=labels, script="echo up; sleep 300")
    [left] = await sandbox.leftovers()
    await asyncio.sleep(2)
    started = time.monotonic()
    result = await sandbox.adopt(left, timeout_s=4)  # 2 s of it passed before the adoption
    assert time.monotonic() - started < 3.5
    assert result.timed_out and result.exit_code is None and result.output == "up\n"
    await sandbox.remove(container_id)
    assert not await asyncio.to_thread(exists, podman, container_id)


async def test_a_cancelled_adoption_leaves_no_container(
    sandbox: Sandbox, podman: PodmanClient, made: list[str], owner: str
) -> None:
    labels = {"herald.owner": owner, "herald.task": "t-cancel", "herald.attempt": "1"}
    container_id = await asyncio.to_thread(make, podman, made, labels=labels)
    [left] = await sandbox.leftovers()
    adoption = asyncio.ensure_future(sandbox.adopt(left, timeout_s=60))
    await asyncio.sleep(1)
    adoption.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adoption
    assert not await asyncio.to_thread(exists, podman, container_id)


async def test_a_kept_run_names_its_container_before_it_starts_and_keeps_it_until_removed(
    sandbox: Sandbox, podman: PodmanClient, owner: str
) -> None:
    seen: list[tuple[RunStart, str]] = []

    async def on_started(start: RunStart) -> None:
        seen.append((start, await asyncio.to_thread(state, podman, start.container_id)))

    result = await sandbox.run("exit.sh", ["0"], timeout_s=20, task_id="t-kept", attempt=2, on_started=on_started,
                               keep=True)
    [(start, state_then)] = seen
    assert state_then == "created"  # recorded before the script could run
    assert start.container_id == result.container_id and start.enforced == result.enforced
    labels = (await asyncio.to_thread(podman.containers.get, result.container_id)).labels
    assert (labels["herald.owner"], labels["herald.task"], labels["herald.attempt"]) == (owner, "t-kept", "2")
    assert await asyncio.to_thread(state, podman, result.container_id) == "exited"
    await sandbox.remove(result.container_id)
    assert not await asyncio.to_thread(exists, podman, result.container_id)


async def test_a_failing_on_started_leaves_the_script_unstarted_and_no_container(
    sandbox: Sandbox, podman: PodmanClient, owner: str
) -> None:
    async def on_started(start: RunStart) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await sandbox.run("exit.sh", ["0"], timeout_s=20, task_id="t-unrecorded", on_started=on_started, keep=True)
    assert await asyncio.to_thread(podman.containers.list, all=True, filters=[f"label=herald.owner={owner}"]) == []
