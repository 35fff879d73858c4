"""What a sandboxed run may do, and the proof that Podman applied it.

The `[sandbox]` config model, the checks on a script name and on the scripts folder's permissions (as the sandbox
user sees them), what the host lets Podman limit (`HostLimits`) and how each resource limit is enforced on it
(`plan_limits`: a cgroup where the host allows one, rlimits otherwise, with the run's memory split by
engine/sandbox/budget.py), the network a run may have (`none`, `default`, `allow` and its entries; the filter itself
is engine/sandbox/netfilter.py), the libpod container spec, and `verify_applied`, which reads the protections back
from the created container. Pure functions: no Podman calls here (engine/sandbox/runner.py makes those).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsl.network import parse_allow_entry
from engine.core.errors import SandboxError
from engine.sandbox.budget import MIN_MEMORY as MIN_MEMORY  # re-exported: the rules' checks use it
from engine.sandbox.budget import (
    PROCESS_STACK,
    SHM_SIZE,
    SIZE_RE,
    MemoryBudget,
    budget_command,
    check_memory,
    format_size,
    parse_size,
    split_memory,
)

DEFAULT_IMAGE = "localhost/herald-sandbox:latest"
NOBODY = 65534
Network = Literal["none", "default", "allow"]
NETWORKS: tuple[str, ...] = ("none", "default", "allow")
_ROOTFUL_NPROC = 1024  # rootful runs share host uid nobody; the pids cgroup is the real per-run limit there
_NOFILE = 256
_FSIZE = 16 * 1024 * 1024
_CPU_SLACK_S = 5
_CPU_PERIOD_US = 100_000
# Rootless runs each get their own container uid from this part of the user's subordinate range, so the
# per-uid RLIMIT_NPROC counts that run's processes only (not the service, conmon or other runs).
RUN_UID_FIRST = 10_000
RUN_UID_COUNT = 50_000


class SandboxConfig(BaseModel):
    """The `[sandbox]` config section; defaults live here and nowhere else."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = "sandboxer"  # whose rootless podman runs scripts; None = the current user
    podman_url: str | None = None  # None = that user's default socket
    autostart: bool = True  # start `podman system service` if nothing answers
    # A service Herald started exits after this many seconds without a request (its ~40 MB are not held while no
    # task runs); the next run starts it again. 0 = it stays until Herald stops.
    service_idle_s: int = Field(default=60, ge=0)
    image: str = Field(default=DEFAULT_IMAGE, min_length=1)
    default_timeout_s: float = Field(default=300, gt=0)
    tmpfs_size: str = Field(default="16m", pattern=SIZE_RE)
    output_limit_bytes: int = Field(default=1_000_000, gt=0)
    memory: str = Field(default="256m", pattern=SIZE_RE)  # per run; a rule may ask for another amount
    # Processes and threads of one run. RLIMIT_NPROC also binds runc's own start-up, which runs as the sandbox user
    # and counts all of that user's threads (the Podman service, conmon, other runs' start-ups): 64 left too little
    # room when several runs started at once, so runs failed with "pthread_create failed".
    pids: int = Field(default=256, ge=16, le=4096)
    cpus: float = Field(default=1.0, gt=0, le=64)  # CPU share; needs a cpu cgroup (see HostLimits)
    # Without a memory cgroup: each process's share (data + stack), so a run of `memory` gets
    # (memory - tmpfs_size - /dev/shm) // process_memory processes at most, and all of them together stay in `memory`.
    process_memory: str = Field(default="16m", pattern=SIZE_RE)

    @field_validator("memory")
    @classmethod
    def _memory_floor(cls, value: str) -> str:
        check_memory(value)
        return value

    @field_validator("process_memory")
    @classmethod
    def _process_floor(cls, value: str) -> str:
        if parse_size(value) < 2 * PROCESS_STACK:
            raise ValueError(f"process_memory {value!r} is below {format_size(2 * PROCESS_STACK)} "
                             f"(each process has {format_size(PROCESS_STACK)} of stack besides its data)")
        return value

    @model_validator(mode="after")
    def _budget_fits(self) -> SandboxConfig:
        memory_budget(parse_size(self.memory), self)  # the default run must fit, cgroups or not
        return self


def memory_budget(memory: int, config: SandboxConfig) -> MemoryBudget:
    """The split of `memory` without a memory cgroup, under `config`; ValueError when it leaves too few processes."""
    return split_memory(memory, tmpfs=parse_size(config.tmpfs_size), share=parse_size(config.process_memory),
                        pids=config.pids, tmpfs_text=config.tmpfs_size)


@dataclass(frozen=True)
class HostLimits:
    """Which cgroup controllers this Podman can use for a container, from `podman info`.

    Rootful Podman can use every controller. Rootless Podman can use only those delegated to the user, and
    on cgroup v1 none at all (podman ignores the limits there with a warning), so rlimits stand in.
    """

    cgroup_version: str  # "v1" or "v2"
    rootless: bool
    controllers: frozenset[str]

    @classmethod
    def from_info(cls, host: dict[str, Any]) -> HostLimits:
        rootless = bool(host["security"]["rootless"])
        version = str(host.get("cgroupVersion") or "v1")
        if rootless:
            controllers = frozenset(host.get("cgroupControllers") or ())
        else:
            controllers = frozenset({"memory", "pids", "cpu"})
        return cls(version, rootless, controllers)

    def has(self, controller: str) -> bool:
        return controller in self.controllers

    def why_not(self, controller: str) -> str:
        """Why the host cannot limit through `controller`, and what would change that."""
        if self.rootless and self.cgroup_version == "v1":
            return ("rootless Podman cannot use cgroups on cgroup v1; boot with cgroup v2 "
                    "(systemd.unified_cgroup_hierarchy=1) and delegate memory, pids and cpu to the user")
        return (f"the {controller} cgroup controller is not delegated to the sandbox user; systemd: "
                "Delegate=memory pids cpu in user@.service.d")


@dataclass(frozen=True)
class RunLimits:
    """The resource limits asked for one run."""

    memory: int  # bytes
    pids: int
    cpus: float
    cpu_seconds: int  # per process (RLIMIT_CPU); the wall-clock timeout is the real bound
    network: Network
    budget: MemoryBudget  # used where the host has no memory cgroup
    allow: tuple[tuple[str, int], ...] = ()  # network "allow": the only destinations (names too, until resolved)
    # Each name of `allow` with an address it resolved to (engine/sandbox/resolve.py `pin`, when the run is created,
    # which also puts the addresses in `allow`): the container's /etc/hosts entries.
    hosts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_run(cls, config: SandboxConfig, *, timeout_s: float, memory: str | int | None,
                network: str | None, network_allow: Sequence[str] = ()) -> RunLimits:
        net = "none" if network is None else network
        if net not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
        if isinstance(network_allow, str):
            raise ValueError("network_allow must be a sequence of \"HOST:PORT\" strings, not one string")
        allow = tuple(parse_allow_entry(entry) for entry in network_allow)
        if net == "allow" and not allow:
            raise ValueError("network \"allow\" needs at least one \"HOST:PORT\" in network_allow")
        if net != "allow" and allow:
            raise ValueError(f"network_allow is only for network \"allow\", not {net!r}")
        size = check_memory(config.memory if memory is None else memory)
        return cls(
            memory=size,
            pids=config.pids,
            cpus=config.cpus,
            cpu_seconds=math.ceil(timeout_s) + _CPU_SLACK_S,
            network=net,  # type: ignore[arg-type]  # checked just above
            budget=memory_budget(size, config),
            allow=tuple(dict.fromkeys(allow)),
        )


@dataclass(frozen=True)
class LimitPlan:
    """How each limit is enforced on this host (`applied`), and what the host could not enforce (`missing`)."""

    applied: tuple[str, ...]
    missing: tuple[str, ...]  # each with why, in short; `reason` says what the host lacks and how to get it
    reason: str
    memory_cgroup: bool
    pids_cgroup: bool
    cpu_cgroup: bool
    budget: MemoryBudget | None = None  # without a memory cgroup: how the total is kept

    @property
    def note(self) -> str:
        text = "limits: " + "; ".join(self.applied)
        if self.missing:
            text += f". Not enforced on this host: {'; '.join(self.missing)} ({self.reason})"
        return text


def plan_limits(limits: RunLimits, host: HostLimits) -> LimitPlan:
    """Pick the mechanism for each limit: the cgroup if the host has it, else the nearest rlimit."""
    applied: list[str] = []
    missing: list[str] = []
    mem = format_size(limits.memory)
    memory_cgroup, pids_cgroup, cpu_cgroup = host.has("memory"), host.has("pids"), host.has("cpu")
    if memory_cgroup:
        applied.append(f"memory={mem} for the whole run (memory cgroup; OOM kill)")
    else:
        applied.append(limits.budget.describe())
    if not memory_cgroup:  # the memory budget's process count, lowered by its wrapper (a pids cgroup or not)
        applied.append(f"pids={limits.budget.processes} (RLIMIT_NPROC of the run's own uid; the memory budget's)")
    elif pids_cgroup:
        applied.append(f"pids={limits.pids} (pids cgroup)")
    elif host.rootless:
        applied.append(f"pids={limits.pids} (RLIMIT_NPROC of the run's own uid)")
    else:
        applied.append(f"pids<={_ROOTFUL_NPROC} (RLIMIT_NPROC of uid nobody, shared)")
        missing.append("a per-run pids limit")
    applied.append(f"cpu_time={limits.cpu_seconds}s per process (RLIMIT_CPU)")
    if cpu_cgroup:
        applied.append(f"cpus={limits.cpus:g} (cpu cgroup quota)")
    else:
        missing.append(f"a CPU share of {limits.cpus:g} cpus")
    lacking = next((c for c in ("memory", "pids", "cpu") if not host.has(c)), "")
    reason = host.why_not(lacking) if lacking else ""
    return LimitPlan(tuple(applied), tuple(missing), reason, memory_cgroup, pids_cgroup, cpu_cgroup,
                     None if memory_cgroup else limits.budget)


def host_id(mapping: Sequence[dict[str, int]], container_id: int) -> int | None:
    """The host id a container id maps to under a rootless user namespace's id map, or None if unmapped."""
    for m in mapping:
        if m["container_id"] <= container_id < m["container_id"] + m["size"]:
            return m["host_id"] + container_id - m["container_id"]
    return None


def run_uid_range(uidmap: Sequence[dict[str, int]], gidmap: Sequence[dict[str, int]]) -> range:
    """Container ids to give runs their own uid (= gid); empty if the subordinate ranges do not reach them."""

    def mapped_end(mapping: Sequence[dict[str, int]]) -> int:
        for m in mapping:
            if m["container_id"] <= RUN_UID_FIRST < m["container_id"] + m["size"]:
                return m["container_id"] + m["size"]
        return RUN_UID_FIRST

    return range(RUN_UID_FIRST, min(mapped_end(uidmap), mapped_end(gidmap), RUN_UID_FIRST + RUN_UID_COUNT))


def check_args(args: Sequence[str]) -> list[str]:
    if isinstance(args, (str, bytes)):
        raise ValueError("args must be a sequence of strings, not a single string")
    argv = list(args)
    for arg in argv:
        if not isinstance(arg, str):
            raise ValueError(f"every argument must be a str, got {type(arg).__name__}: {arg!r}")
        if "\x00" in arg:
            raise ValueError(f"argument {arg!r} contains a NUL byte")
    return argv


def resolve_script(folder: Path, name: str) -> str:
    """The script's path relative to `folder`, or ValueError if `name` is not a plain file directly in it."""
    if not isinstance(name, str) or not name:
        raise ValueError("script name must be a non-empty string")
    if "/" in name or "\x00" in name or name.startswith("."):
        raise ValueError(
            f"script name {name!r} must be a plain file name in the scripts folder "
            "(no '/', no '..', not starting with '.')"
        )
    path = folder / name
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ValueError(f"script {name!r} does not exist in {folder}") from None
    if stat.S_ISLNK(st.st_mode):
        # A link inside the folder is fine; the container gets the target's path, since an absolute
        # link target means nothing inside the container.
        target = path.resolve()
        if not target.is_relative_to(folder):
            raise ValueError(f"script {name!r} is a symlink to {target}, outside the scripts folder {folder}")
        if not target.is_file():
            raise ValueError(f"script {name!r} links to {target}, which is not a regular file")
        return target.relative_to(folder).as_posix()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"script {name!r} in {folder} is not a regular file")
    return name


def _mode_allows(st: os.stat_result, uid: int, gid: int, want: int) -> bool:
    # Only owner/group/other bits: os.access() would answer for *our* uid, and the container has no
    # capabilities and no supplementary groups to bypass them.
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == gid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def access_problem(folder: Path, script_rel: str | None, uid: int, gid: int, who: str) -> str | None:
    """Why `who` cannot reach the scripts (every folder from / enterable, the folder and script readable)."""
    hint = (
        "the scripts folder and every folder above it must be world-enterable "
        "(chmod 755 folders, 644 scripts); use e.g. /srv/herald/scripts, not a folder under /root"
    )
    checks: list[tuple[Path, int, str]] = [(p, 0o1, "enter") for p in reversed(folder.parents)]
    checks.append((folder, 0o5, "read"))
    if script_rel is not None:
        checks.append((folder / script_rel, 0o4, "read"))
    for path, want, verb in checks:
        try:
            st = path.stat()
        except OSError as exc:
            return f"cannot stat {path}: {exc.strerror}"
        if not _mode_allows(st, uid, gid, want):
            return (
                f"the sandbox user {who} cannot {verb} {path} (mode {stat.filemode(st.st_mode)}, "
                f"owner uid {st.st_uid}): {hint}"
            )
    return None


# Labels on every container (engine/sandbox/leftovers.py finds an earlier process's containers by them).
OWNER_LABEL = "herald.owner"  # one engine's data folder, or one worker; set by the runner
TASK_LABEL = "herald.task"
ATTEMPT_LABEL = "herald.attempt"
UID_LABEL = "herald.uid"  # rootless: the container uid the run has to itself


def build_spec(
    *,
    config: SandboxConfig,
    argv: list[str],
    scripts_src: str,
    task_id: str,
    attempt: int = 1,
    limits: RunLimits,
    plan: LimitPlan,
    host: HostLimits,
    run_uid: int | None,
) -> dict[str, Any]:
    """The libpod SpecGenerator; raw, because podman-py cannot express a noexec tmpfs.

    `run_uid` is the container uid the script runs as (rootless: a fresh one per run; None = rootful, nobody).
    """
    rlimits = [
        {"type": "nproc", "soft": limits.pids, "hard": limits.pids},
        {"type": "nofile", "soft": _NOFILE, "hard": _NOFILE},
        {"type": "fsize", "soft": _FSIZE, "hard": _FSIZE},
        {"type": "cpu", "soft": limits.cpu_seconds, "hard": limits.cpu_seconds},
    ]
    if not host.rootless:
        rlimits[0] = {"type": "nproc", "soft": _ROOTFUL_NPROC, "hard": _ROOTFUL_NPROC}
    command = argv
    if plan.budget is not None:
        # RLIMIT_DATA, not RLIMIT_AS: runc's Go start-up reserves far more address space than it uses. runc starts
        # under the run's whole memory; the wrapper then lowers the limits to the budget's share before the script.
        rlimits.append({"type": "data", "soft": limits.memory, "hard": limits.memory})
        command = budget_command(argv, plan.budget)
    if limits.network == "none":
        netns = "none"  # no filter needed: there is nothing but lo
    else:
        netns = "slirp4netns" if host.rootless else "bridge"
    spec: dict[str, Any] = {
        "image": config.image,
        "command": command,  # an argument vector: no argument is ever parsed by a shell
        "env": {"LANG": "C", "HERALD_TASK_ID": task_id, "HERALD_ATTEMPT": str(attempt), "HOME": "/tmp"},
        "labels": {"app": "herald", TASK_LABEL: task_id, ATTEMPT_LABEL: str(attempt)},
        "netns": {"nsmode": netns},
        "cap_drop": ["ALL"],
        "read_only_filesystem": True,
        "no_new_privileges": True,
        "mounts": [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["rw", "noexec", "nosuid", "nodev", f"size={config.tmpfs_size}"]},
            {"destination": "/scripts", "type": "bind", "source": scripts_src,
             "options": ["ro", "rbind", "noexec", "nosuid", "nodev"]},
        ],
        "r_limits": rlimits,
        "shm_size": SHM_SIZE,
        # conmon truncates the on-disk log past this size, so a script spewing output cannot fill the
        # sandbox user's disk; the output itself is read (and counted) from the attach stream.
        "log_configuration": {"size": log_size(config)},
    }
    if limits.hosts:
        # The allow-list's names, pinned to the addresses they had when the run was created: the script looks them
        # up in /etc/hosts, with no DNS (it stays blocked).
        spec["hostadd"] = [f"{name}:{address}" for name, address in limits.hosts]
    resources: dict[str, Any] = {}
    if plan.memory_cgroup:
        resources["memory"] = {"limit": limits.memory, "swap": limits.memory}
    if plan.pids_cgroup:
        resources["pids"] = {"limit": limits.pids}
    if plan.cpu_cgroup:
        resources["cpu"] = {"quota": round(limits.cpus * _CPU_PERIOD_US), "period": _CPU_PERIOD_US}
    if resources:
        spec["resource_limits"] = resources
    if run_uid is None:
        # Rootful: container root would be host root (minus capabilities). Run as nobody instead.
        spec["user"] = f"{NOBODY}:{NOBODY}"
    else:
        # Not container root: that is the sandbox user itself on the host, shared with the service.
        spec["user"] = f"{run_uid}:{run_uid}"
        spec["labels"][UID_LABEL] = str(run_uid)
    return spec


def log_size(config: SandboxConfig) -> int:
    return max(8 * 1024 * 1024, 4 * config.output_limit_bytes)


def verify_applied(
    attrs: dict[str, Any], spec: dict[str, Any], *, plan: LimitPlan, who: str, seccomp: bool
) -> tuple[str, ...]:
    """Read the protections back from `podman inspect`; SandboxError if any was not applied.

    Podman 4.3 silently ignores some spec fields (oci_runtime, for one), so asking is not enough.
    """
    hc = attrs.get("HostConfig") or {}
    cfg = attrs.get("Config") or {}
    secopt = hc.get("SecurityOpt") or []
    tmpfs = set((hc.get("Tmpfs") or {}).get("/tmp", "").split(","))
    scripts = [m for m in attrs.get("Mounts") or [] if m.get("Destination") == "/scripts"]
    ulimits = {u.get("Name"): (u.get("Soft"), u.get("Hard")) for u in hc.get("Ulimits") or []}
    want_ulimits = {f"RLIMIT_{r['type'].upper()}": (r["soft"], r["hard"]) for r in spec["r_limits"]}
    size = next(o for o in spec["mounts"][0]["options"] if o.startswith("size="))
    netns = spec["netns"]["nsmode"]
    resources = spec.get("resource_limits") or {}
    checks = [
        (f"network={netns}", hc.get("NetworkMode") == netns),
        ("cap_drop=ALL",
         not hc.get("Privileged") and not hc.get("CapAdd") and not attrs.get("EffectiveCaps")),
        ("read_only_root", hc.get("ReadonlyRootfs") is True),
        ("no_new_privileges", "no-new-privileges" in secopt),
        (f"tmpfs:/tmp noexec,nosuid,nodev,{size}", {"noexec", "nosuid", "nodev", size} <= tmpfs),
        ("scripts:ro", len(scripts) == 1 and scripts[0].get("RW") is False
         and "noexec" in (scripts[0].get("Options") or [])),
        ("rlimits " + ",".join(f"{r['type']}={r['soft']}" for r in spec["r_limits"]),
         all(ulimits.get(k) == v for k, v in want_ulimits.items())),
        ("command as argv", cfg.get("Cmd") == spec["command"]),
        (f"log_size_max={spec['log_configuration']['size']}", bool((hc.get("LogConfig") or {}).get("Size"))),
        (f"user={spec['user']} ({who})", cfg.get("User") == spec["user"]),
        (f"/dev/shm size={format_size(spec['shm_size'])}", hc.get("ShmSize") == spec["shm_size"]),
    ]
    if spec.get("hostadd"):
        checks.append(("/etc/hosts " + ", ".join(spec["hostadd"]), hc.get("ExtraHosts") == spec["hostadd"]))
    if "memory" in resources:
        limit = resources["memory"]["limit"]
        checks.append((f"memory cgroup={limit}", hc.get("Memory") == limit))
    if "pids" in resources:
        limit = resources["pids"]["limit"]
        checks.append((f"pids cgroup={limit}", hc.get("PidsLimit") == limit))
    if "cpu" in resources:
        checks.append((f"cpu cgroup quota={resources['cpu']['quota']}/{resources['cpu']['period']}",
                       hc.get("CpuQuota") == resources["cpu"]["quota"]))
    if seccomp and "seccomp=unconfined" not in secopt:
        checks.append(("seccomp=default", True))
    missing = [name for name, ok in checks if not ok]
    if missing:
        raise SandboxError(f"podman did not apply {', '.join(missing)} to the container; refusing to run")
    return tuple(name for name, _ in checks if name != "command as argv") + plan.applied


