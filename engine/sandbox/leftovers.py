"""Containers an earlier process of the same owner left behind: find them, tell started from never started, remove.

Every container Herald creates carries labels: `herald.owner` (one engine's data folder, or one worker), `herald.task`
and `herald.attempt` (which run it is), `herald.uid` (rootless: the container uid it runs as). After a crash the
engine lists its owner's containers, adopts those whose task is still open and whose script started (see
`Sandbox.adopt`), and removes the rest; other owners' containers are never touched.

Blocking; engine/sandbox/runner.py calls these from its worker threads.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.sandbox.libpod import Libpod, PodmanFailure, container_path
from engine.sandbox.policy import ATTEMPT_LABEL, OWNER_LABEL, TASK_LABEL, UID_LABEL

log = logging.getLogger("engine.sandbox")


@dataclass(frozen=True)
class Leftover:
    """One of this owner's containers, as Podman lists it."""

    container_id: str
    task_id: str | None
    attempt: int | None  # None on containers made before the label existed
    state: str  # Podman's: created, running, exited, stopped, ...
    started_at: float | None  # epoch seconds the script started; None if it never did
    run_uid: int | None

    @property
    def started(self) -> bool:
        """The script began running (whatever it does now): running it again would run it twice."""
        return self.started_at is not None

    def describe(self) -> str:
        return f"{self.container_id[:12]} (task {self.task_id}, attempt {self.attempt}, {self.state})"


def find(api: Libpod, owner: str) -> list[Leftover]:
    """Every container of `owner`, in any state."""
    return _labelled(api, OWNER_LABEL, owner)


def find_task(api: Libpod, task_id: str) -> list[Leftover]:
    """Every container of one task, whichever process on this machine made it (a `herald worker` that died)."""
    return _labelled(api, TASK_LABEL, task_id)


def _labelled(api: Libpod, key: str, value: str) -> list[Leftover]:
    """The containers whose label `key` is `value`, in any state. Each is checked for the label again here: if the
    filter were ever ignored (podman-py once sent it so that it matched nothing, containers/podman-py#542), the
    listing would hold everyone's containers, and a caller removes what it gets."""
    found = []
    listing = api.json("GET", "/containers/json",
                       {"all": "true", "filters": json.dumps({"label": [f"{key}={value}"]})})
    for attrs in listing or ():
        labels = attrs.get("Labels") or {}
        container_id = str(attrs.get("Id") or "")
        if labels.get(key) != value or not container_id:
            log.error("podman listed container %s with %s=%r when asked for %r: its label filter is not applied; "
                      "leaving it alone", container_id[:12], key, labels.get(key), value)
            continue
        started = attrs.get("StartedAt")  # epoch seconds in the libpod listing; year 1 (negative) if never started
        found.append(Leftover(
            container_id=container_id, task_id=labels.get(TASK_LABEL), attempt=_int(labels.get(ATTEMPT_LABEL)),
            state=str(attrs.get("State") or "unknown"),
            started_at=float(started) if isinstance(started, int | float) and started > 0 else None,
            run_uid=_int(labels.get(UID_LABEL)),
        ))
    return found


def remove(api: Libpod, container_id: str) -> bool:
    """SIGKILL (sh ignores SIGTERM, and a forced remove would wait 10 s for it) and remove; False if it was gone."""
    try:
        api.json("POST", container_path(container_id, "kill"), {"signal": "SIGKILL"})
    except PodmanFailure as exc:
        if exc.status == 404:
            return False
        if exc.unreachable:
            raise
        # otherwise not running (exited, or never started: Podman 4.3 says 500 "container state improper")
    try:
        api.json("DELETE", container_path(container_id), {"force": "true"})
    except PodmanFailure as exc:
        if exc.status == 404:
            return False
        raise
    return True


def finished_after_s(attrs: dict[str, Any]) -> float | None:
    """How long the container ran, from `podman inspect`'s State, or None if Podman does not say."""
    state = attrs.get("State") or {}
    started, finished = _time(state.get("StartedAt")), _time(state.get("FinishedAt"))
    if started is None or finished is None or finished < started:
        return None
    return finished - started


def _time(text: object) -> float | None:
    """Epoch seconds from Podman's RFC 3339 time with nanoseconds ("0001-01-01T00:00:00Z" means never)."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _int(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None
