"""Reaching the sandbox's Podman: the service (started if allowed), what it runs as, and whether the image is there.

Blocking; engine/sandbox/runner.py calls it from its worker threads.
"""

from __future__ import annotations

import logging
import pwd
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from engine.core.errors import SandboxUnavailable
from engine.sandbox.libpod import Libpod, PodmanFailure
from engine.sandbox.output import CONTROL_TIMEOUT_S
from engine.sandbox.podman_service import SETUP_HINT, PodmanService, ping, socket_url_for
from engine.sandbox.policy import DEFAULT_IMAGE, NOBODY, HostLimits, SandboxConfig, host_id, run_uid_range

if TYPE_CHECKING:
    from podman import PodmanClient

log = logging.getLogger("engine.sandbox")


@dataclass(frozen=True)
class Connection:
    """A reachable service plus what it told us about itself."""

    api: Libpod  # the calls every engine makes (engine/sandbox/libpod.py)
    url: str
    host: HostLimits
    seccomp: bool
    uidmap: tuple[dict[str, int], ...]  # rootless: container id -> host id
    gidmap: tuple[dict[str, int], ...]
    run_uids: range  # rootless: container uids handed out one per run; empty when rootful
    owner: str  # who runs podman, for messages: "sandboxer (uid 1001)"
    store: str  # whose image store the image must be in, for messages
    _clients: list[PodmanClient] = field(default_factory=list, compare=False, repr=False)

    @cached_property
    def client(self) -> PodmanClient:
        """podman-py, which runs containers: imported and connected with the first run (engine/sandbox/libpod.py)."""
        from podman import PodmanClient

        client = PodmanClient(base_url=self.url, timeout=CONTROL_TIMEOUT_S)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Blocking: release podman-py's connections, if a run made any."""
        for client in self._clients:
            client.close()

    @property
    def rootless(self) -> bool:
        return self.host.rootless

    @property
    def podman_uid(self) -> int:
        """The host uid Podman runs as (container root, rootless), 0 for rootful."""
        return (host_id(self.uidmap, 0) or 0) if self.rootless else 0

    def reader(self, run_uid: int | None) -> tuple[int, int, str]:
        """Host uid and gid the script's files are read as, and who that is, for messages."""
        if run_uid is None:
            return NOBODY, NOBODY, f"nobody (uid {NOBODY}, rootful podman)"
        uid = host_id(self.uidmap, run_uid)
        gid = host_id(self.gidmap, run_uid)
        assert uid is not None and gid is not None  # run_uids only holds mapped ids
        return uid, gid, f"a per-run uid of {self.owner} (host uid {uid}, a subordinate id)"


def connect(cfg: SandboxConfig, service: PodmanService, *, parallel_runs: int) -> Connection:
    """Blocking: reach the service (maybe starting it), learn who it runs as, check the image."""
    url = cfg.podman_url or socket_url_for(cfg.user)
    Libpod(url, CONTROL_TIMEOUT_S)  # a URL of a kind it cannot reach is refused now, naming the kinds it can
    if cfg.autostart:
        url = service.start(cfg.user, url)
    elif not ping(url):
        raise SandboxUnavailable(
            f"no podman service answers at {url}: start it (`podman system service --time=0 {url}` "
            f"as {cfg.user or 'the current user'}) or set autostart = true"
        )
    api = Libpod(url, CONTROL_TIMEOUT_S)
    try:
        answer = api.json("GET", "/info")
        info = answer["host"]
        host = HostLimits.from_info(info)
        uidmap: tuple[dict[str, int], ...] = ()
        gidmap: tuple[dict[str, int], ...] = ()
        run_uids = range(0)
        if host.rootless:
            uidmap = tuple(info["idMappings"]["uidmap"])
            gidmap = tuple(info["idMappings"]["gidmap"])
            run_uids = run_uid_range(uidmap, gidmap)
            owner_uid = host_id(uidmap, 0)
            try:
                name = pwd.getpwuid(owner_uid).pw_name if owner_uid is not None else "?"
            except KeyError:
                name = "?"
            owner = f"{name} (uid {owner_uid})"
            if len(run_uids) < 2 * parallel_runs:
                raise SandboxUnavailable(
                    f"the subordinate uid/gid ranges of {owner} do not reach container ids "
                    f"{run_uids.start}-{run_uids.start + 1000} (each run gets a uid of its own): give it "
                    f"65536 ids (`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`, "
                    "then `podman system migrate` as that user)"
                )
            store = owner
        else:
            owner = store = "root (rootful podman)"
        if not image_exists(api, cfg.image):
            raise SandboxUnavailable(image_missing(cfg.image, store))
        seccomp = bool(info["security"].get("seccompEnabled"))
    except SandboxUnavailable:
        raise
    except PodmanFailure as exc:
        if exc.unreachable:
            raise SandboxUnavailable(str(exc)) from exc
        raise SandboxUnavailable(f"the podman service at {url} answers but misbehaves: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise SandboxUnavailable(f"the podman service at {url} answers but misbehaves: {exc!r}") from exc
    log.info("sandbox ready: %s, %s, cgroup %s, image %s", url, "rootless" if host.rootless else "rootful",
             host.cgroup_version, cfg.image)
    return Connection(api, url, host, seccomp, uidmap, gidmap, run_uids, owner, store)


def image_exists(api: Libpod, image: str) -> bool:
    try:
        api.json("GET", f"/images/{image}/exists")
    except PodmanFailure as exc:
        if exc.status == 404:
            return False
        raise
    return True


def image_missing(image: str, who: str) -> str:
    if image == DEFAULT_IMAGE:
        fix = SETUP_HINT
    else:
        fix = f"build or pull it as that user (.ci/setup-sandbox builds only {DEFAULT_IMAGE})"
    return f"the image {image} is missing from the podman store of {who}: {fix}"
