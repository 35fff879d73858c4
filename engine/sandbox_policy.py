"""What a sandboxed run may do, and the proof that Podman applied it.

The `[sandbox]` config model, the checks on a script name and on the scripts folder's permissions (as the sandbox
user sees them), the libpod container spec, and `verify_applied`, which reads the protections back from the created
container. Pure functions: no Podman calls here (engine/sandbox.py makes those).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import SandboxError

DEFAULT_IMAGE = "localhost/herald-sandbox:latest"
NOBODY = 65534
_NPROC = 256  # counts every task of the sandbox user (service, conmon, all containers): keep headroom
_NOFILE = 256
_FSIZE = 16 * 1024 * 1024
_CPU_SLACK_S = 5


class SandboxConfig(BaseModel):
    """The `[sandbox]` config section; defaults live here and nowhere else."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = "sandboxer"  # whose rootless podman runs scripts; None = the current user
    podman_url: str | None = None  # None = that user's default socket
    autostart: bool = True  # start `podman system service` if nothing answers
    image: str = Field(default=DEFAULT_IMAGE, min_length=1)
    default_timeout_s: float = Field(default=300, gt=0)
    tmpfs_size: str = Field(default="16m", pattern=r"^[1-9][0-9]*[kmg]?$")
    output_limit_bytes: int = Field(default=1_000_000, gt=0)


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


def build_spec(
    *,
    config: SandboxConfig,
    argv: list[str],
    scripts_src: str,
    timeout_s: float,
    task_id: str,
    rootless: bool,
) -> dict[str, Any]:
    """The libpod SpecGenerator; raw, because podman-py cannot express a noexec tmpfs."""
    cpu = math.ceil(timeout_s) + _CPU_SLACK_S
    spec: dict[str, Any] = {
        "image": config.image,
        "command": argv,  # an argument vector: nothing here is ever parsed by a shell
        "env": {"LANG": "C", "HERALD_TASK_ID": task_id},
        "labels": {"app": "herald", "herald.task": task_id},
        "netns": {"nsmode": "none"},
        "cap_drop": ["ALL"],
        "read_only_filesystem": True,
        "no_new_privileges": True,
        "mounts": [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["rw", "noexec", "nosuid", "nodev", f"size={config.tmpfs_size}"]},
            {"destination": "/scripts", "type": "bind", "source": scripts_src,
             "options": ["ro", "rbind", "noexec", "nosuid", "nodev"]},
        ],
        "r_limits": [
            {"type": "nproc", "soft": _NPROC, "hard": _NPROC},
            {"type": "nofile", "soft": _NOFILE, "hard": _NOFILE},
            {"type": "fsize", "soft": _FSIZE, "hard": _FSIZE},
            {"type": "cpu", "soft": cpu, "hard": cpu},
        ],
        # conmon truncates the on-disk log past this size, so a script spewing output cannot fill the
        # sandbox user's disk; we only ever keep output_limit_bytes of it.
        "log_configuration": {"size": log_size(config)},
    }
    if not rootless:
        # Rootful: container root would be host root (minus capabilities). Run as nobody instead.
        spec["user"] = f"{NOBODY}:{NOBODY}"
    return spec


def log_size(config: SandboxConfig) -> int:
    return max(8 * 1024 * 1024, 4 * config.output_limit_bytes)


def verify_applied(
    attrs: dict[str, Any], spec: dict[str, Any], *, rootless: bool, who: str, seccomp: bool
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
    checks = [
        ("network=none", hc.get("NetworkMode") == "none"),
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
    ]
    if rootless:
        checks.append((f"rootless as {who}", True))
    else:
        checks.append((f"user={NOBODY}:{NOBODY}", cfg.get("User") == spec.get("user")))
    if seccomp and "seccomp=unconfined" not in secopt:
        checks.append(("seccomp=default", True))
    missing = [name for name, ok in checks if not ok]
    if missing:
        raise SandboxError(f"podman did not apply {', '.join(missing)} to the container; refusing to run")
    return tuple(name for name, _ in checks if name != "command as argv")


