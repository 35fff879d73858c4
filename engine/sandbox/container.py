"""One container's life through podman-py: create it and read back what Podman applied, initialise it and set its
network filter, start it, wait for its exit, kill and remove it.

Imported with the first run (engine/sandbox/runner.py): podman-py brings requests with it (see
engine/sandbox/libpod.py for the calls made before that). Every podman-py error leaves here as `PodmanFailure`, whose
`unreachable` says the service itself is gone.

Blocking; the runner calls these from its worker threads.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import requests
from podman.domain.containers import Container
from podman.errors import APIError, NotFound

from engine.core.errors import SandboxError, SandboxUnavailable
from engine.sandbox import netfilter
from engine.sandbox.host import Connection, image_missing
from engine.sandbox.libpod import PodmanFailure
from engine.sandbox.output import explain
from engine.sandbox.policy import LimitPlan, RunLimits, verify_applied

__all__ = ["Container", "create", "discard", "get", "kill", "reload", "start", "wait"]

log = logging.getLogger("engine.sandbox")
P = ParamSpec("P")
T = TypeVar("T")


def _translated(fn: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except APIError as exc:
            raise failure(exc) from exc

    return call


def failure(exc: APIError) -> PodmanFailure:
    # podman-py wraps every OSError (requests' included) in APIError; the cause tells a dead service apart.
    cause = exc.__cause__
    if isinstance(cause, (requests.ConnectionError, ConnectionError, FileNotFoundError)):
        return PodmanFailure(f"no answer from the podman service ({cause!r})", None)
    return PodmanFailure(explain(str(exc)), exc.status_code or 500)


@_translated
def get(conn: Connection, container_id: str) -> Container:
    return conn.client.containers.get(container_id)


def create(conn: Connection, spec: dict[str, Any], plan: LimitPlan, run_uid: int | None,
           limits: RunLimits) -> tuple[Container, tuple[str, ...]]:
    """Create the container, verify what podman really applied, and set its network filter."""
    try:
        resp = conn.client.api.post("/containers/create", data=json.dumps(spec),
                                    headers={"content-type": "application/json"})
        resp.raise_for_status()
        ctr = conn.client.containers.get(resp.json()["Id"])
    except APIError as exc:
        error = failure(exc)
        # Re-checked on every run: removing the image later gives the same clear message.
        if not error.unreachable and "image not known" in str(exc).lower():
            raise SandboxUnavailable(image_missing(spec["image"], conn.store)) from exc
        raise error from exc
    try:
        _, _, who = conn.reader(run_uid)
        enforced = verify_applied(ctr.attrs, spec, plan=plan, who=who, seccomp=conn.seccomp)
        if limits.network != "none":
            enforced += (_filter(conn, ctr, limits, run_uid),)
        return ctr, enforced
    except BaseException:
        discard(ctr, False)
        raise


@_translated
def _filter(conn: Connection, ctr: Container, limits: RunLimits, run_uid: int | None) -> str:
    """Init the container (its namespace and slirp4netns set up, the script not started) and load its packet filter;
    SandboxError if that cannot be done and proven."""
    ctr.init()
    ctr.reload()
    state = ctr.attrs.get("State") or {}
    pid, conmon_pid = int(state.get("Pid") or 0), int(state.get("ConmonPid") or 0)
    if pid <= 0 or conmon_pid <= 0:
        raise SandboxError("podman reported no process for the initialised container; refusing to run")
    blocked = netfilter.host_addresses() if limits.network == "default" else ()
    v4, v6 = netfilter.rulesets(limits.network, limits.allow, blocked)
    netfilter.apply(pid, conn.podman_uid, v4, v6, conmon_pid=conmon_pid, run_uid=conn.reader(run_uid)[0])
    return netfilter.describe(limits.network, limits.allow, blocked)


@_translated
def start(ctr: Container) -> None:
    ctr.start()


@_translated
def wait(ctr: Container, timeout_s: float) -> int:
    """The exit code, once the container has exited; podman answers within `timeout_s`."""
    # interval: podman polls the state at this rate; its 250 ms default is most of a short run.
    return int(ctr.wait(condition="exited", interval="10ms", timeout=timeout_s))


@_translated
def reload(ctr: Container) -> dict[str, Any]:
    """`podman inspect` of the container, fresh."""
    ctr.reload()
    return dict(ctr.attrs)


def kill(ctr: Container) -> bool:
    """SIGKILL the container; False if it had already exited."""
    try:
        ctr.kill(signal="SIGKILL")
        return True
    except APIError:  # 409 "not running" (or gone): it beat the timeout
        return False


def discard(ctr: Container, may_run: bool) -> None:
    """Remove the container; SIGKILL first if it may still run (sh ignores SIGTERM)."""
    if may_run:
        kill(ctr)
    try:
        ctr.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:
        log.warning("could not remove sandbox container %s: %s", ctr.id[:12], exc)
