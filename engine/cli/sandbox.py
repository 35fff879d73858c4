"""`herald sandbox doctor` and `herald sandbox image build`: check the host for the sandbox, and make its image.

The doctor prints one line per check, `OK` or `FAIL`, and for each failure the exact fix; it exits 0 only when every
check passed. Each check is a small function returning a `Check`; they run in order and a failed prerequisite
(podman, the user, the service) turns the checks that depend on it into one FAIL naming that prerequisite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.cli.common import EXIT_FAILED, EXIT_OK, add_config_args, load_for
from engine.core.config import Config
from engine.core.errors import SandboxUnavailable

_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def add_parsers(sub: Any) -> None:
    sandbox = sub.add_parser("sandbox", help="check the script sandbox's host, build its image")
    actions = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    doctor = actions.add_parser(
        "doctor", help="check podman, the sandbox user, the service, runtime, cgroups, image and scripts folder",
        description="One line per check, OK or FAIL with the fix. Exit 0 when every check passes.")
    add_config_args(doctor)
    doctor.set_defaults(handler=run_doctor)
    image = actions.add_parser("image", help="the sandbox image")
    image_actions = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = image_actions.add_parser(
        "build", help="import the minimal busybox image as [sandbox] image into the sandbox user's store")
    add_config_args(build)
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.set_defaults(handler=run_image_build)


def run_image_build(args: argparse.Namespace) -> int:
    from engine.sandbox.podman_service import build_image

    config = load_for(args)
    try:
        print(build_image(config.sandbox.user, config.sandbox.image, force=args.force))
    except SandboxUnavailable as exc:
        print(f"herald sandbox image build: {exc}")
        return EXIT_FAILED
    return EXIT_OK


# --- the doctor -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class _Doctor:
    """Runs the checks in order; later checks use what earlier ones found (the user, the client, the host)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sb = config.sandbox
        self.user: Any = None  # engine.podman_service.UserInfo
        self.client: Any = None  # podman.PodmanClient
        self.info: dict[str, Any] = {}
        self.service: Any = None  # a PodmanService we started, stopped at the end

    def checks(self) -> list[Callable[[], Check]]:
        return [self.podman, self.runc, self.user_exists, self.subids, self.uidmap_tools, self.service_answers,
                self.runtime, self.cgroups, self.memory, self.image, self.tun, self.network_filter,
                self.scripts_folder, self.trial_run]

    def podman(self) -> Check:
        path = shutil.which("podman", path=_SAFE_PATH)
        if path is None:
            return Check("podman", False, "not installed", "apt-get install podman runc uidmap slirp4netns")
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        return Check("podman", True, f"{version} ({path})")

    def runc(self) -> Check:
        path = shutil.which("runc", path=_SAFE_PATH)
        if path is None:
            return Check("runc", False, "not installed (crun fails on cgroup v1 hosts)", "apt-get install runc")
        return Check("runc", True, path)

    def user_exists(self) -> Check:
        from engine.sandbox.podman_service import user_info

        try:
            self.user = user_info(self.sb.user)
        except SandboxUnavailable:
            return Check("sandbox user", False, f"{self.sb.user!r} does not exist",
                         f"bash .ci/setup-sandbox (or `useradd -m -s /bin/sh {self.sb.user}`)")
        if self.user.uid == 0:
            return Check("sandbox user", True, "root: rootful podman, scripts run as nobody")
        return Check("sandbox user", True, f"{self.user.name} (uid {self.user.uid}, home {self.user.home})")

    def subids(self) -> Check:
        if self.user is None:
            return Check("subuid/subgid", False, "no sandbox user", "fix the sandbox user first")
        if self.user.uid == 0:
            return Check("subuid/subgid", True, "not needed (rootful)")
        ranges = []
        for path in ("/etc/subuid", "/etc/subgid"):
            size = _subid_size(path, self.user.name, self.user.uid)
            if size < 65536:
                return Check("subuid/subgid", False, f"{path}: {size} ids for {self.user.name} (need 65536: "
                             "one uid per run from container uid 10000 on)",
                             f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {self.user.name} "
                             f"&& runuser -u {self.user.name} -- podman system migrate")
            ranges.append(f"{os.path.basename(path)} {size}")
        return Check("subuid/subgid", True, ", ".join(ranges) + " ids")

    def uidmap_tools(self) -> Check:
        missing = [t for t in ("newuidmap", "newgidmap") if shutil.which(t, path=_SAFE_PATH) is None]
        if missing and self.user is not None and self.user.uid != 0:
            return Check("uidmap", False, f"missing {' '.join(missing)}", "apt-get install uidmap")
        return Check("uidmap", True, "newuidmap, newgidmap present")

    def service_answers(self) -> Check:
        from podman import PodmanClient

        from engine.sandbox.podman_service import PodmanService, ping, socket_url_for

        if self.user is None:
            return Check("podman service", False, "no sandbox user", "fix the sandbox user first")
        url = self.sb.podman_url or socket_url_for(self.sb.user)
        note = "answers"
        if not ping(url):
            if not self.sb.autostart:
                return Check("podman service", False, f"nothing answers at {url} and autostart is off",
                             f"start it as {self.user.name}: podman system service --time=0 {url}")
            self.service = PodmanService()
            try:
                self.service.start(self.sb.user, url)
            except SandboxUnavailable as exc:
                return Check("podman service", False, f"could not start it at {url}: {exc}",
                             f"run `podman info` as {self.user.name} and fix what it reports")
            note = "started for this check (herald starts it on demand: autostart = true)"
        self.client = PodmanClient(base_url=url, timeout=30)
        self.info = self.client.info()
        return Check("podman service", True, f"{url} {note}, podman {self.info['version']['Version']}")

    def runtime(self) -> Check:
        if not self.info:
            return Check("runtime", False, "podman service not reachable", "fix the podman service first")
        host = self.info["host"]
        name = host["ociRuntime"]["name"]
        if name != "runc" and host.get("cgroupVersion") == "v1":
            return Check("runtime", False, f"{name} on cgroup v1 (crun fails there)",
                         f"add [engine] runtime = \"runc\" in ~{self.user.name}/.config/containers/"
                         "containers.conf.d/10-runtime.conf (bash .ci/setup-sandbox writes it)")
        version = str(host["ociRuntime"].get("version", "")).splitlines()[0:1]
        return Check("runtime", True, f"{name} {' '.join(version)}".strip())

    def cgroups(self) -> Check:
        from engine.sandbox.policy import HostLimits, RunLimits, plan_limits

        if not self.info:
            return Check("cgroups", False, "podman service not reachable", "fix the podman service first")
        host = HostLimits.from_info(self.info["host"])
        plan = plan_limits(RunLimits.for_run(self.sb, timeout_s=self.sb.default_timeout_s, memory=None,
                                             network=None), host)
        controllers = ", ".join(sorted(host.controllers)) or "none"
        detail = (f"cgroup {host.cgroup_version}, {'rootless' if host.rootless else 'rootful'}, controllers "
                  f"usable: {controllers}. {plan.note}")
        return Check("cgroups/limits", True, detail)

    def memory(self) -> Check:
        """How a run's memory is bounded here: a cgroup total, or rlimits split so that they add up to it."""
        from engine.sandbox.policy import HostLimits, RunLimits, format_size, plan_limits

        if not self.info:
            return Check("memory", False, "podman service not reachable", "fix the podman service first")
        limits = RunLimits.for_run(self.sb, timeout_s=self.sb.default_timeout_s, memory=None, network=None)
        plan = plan_limits(limits, HostLimits.from_info(self.info["host"]))
        if plan.budget is None:
            return Check("memory", True, f"each run's total is a memory cgroup of {format_size(limits.memory)} "
                                         "(the kernel OOM-kills past it; /tmp and /dev/shm pages count in it)")
        budget = plan.budget
        return Check("memory", True, f"no memory cgroup, so rlimits keep the total: {budget.split()} = at "
                                     f"most {format_size(budget.bound)} of {format_size(budget.total)}; a run "
                                     "asking for more memory gets more processes, not bigger ones")

    def image(self) -> Check:
        if self.client is None:
            return Check("image", False, "podman service not reachable", "fix the podman service first")
        if not self.client.images.exists(self.sb.image):
            return Check("image", False, f"{self.sb.image} is not in the store of {self.user.name}",
                         "herald sandbox image build (as root)")
        return Check("image", True, f"{self.sb.image} present")

    def tun(self) -> Check:
        """Only `network default` (slirp4netns) needs it; runs keep network none without it."""
        if self.user is None or self.user.uid == 0:
            return Check("/dev/net/tun", True, "not needed (rootful)")
        try:
            mode = os.stat("/dev/net/tun").st_mode & 0o777
        except OSError:
            return Check("/dev/net/tun", False, "missing: `network default` runs cannot start",
                         "modprobe tun (only needed for rules that opt in to network default)")
        if mode & 0o006 != 0o006:
            return Check("/dev/net/tun", False, f"mode {mode:o}: slirp4netns (network default) cannot open it",
                         "chmod 666 /dev/net/tun (only needed for rules that opt in to network default)")
        return Check("/dev/net/tun", True, f"mode {mode:o}: network default (slirp4netns) possible")

    def network_filter(self) -> Check:
        """Runs with a network (`network default`, `network allow`) need their packet filter; prove it on a trial."""
        from engine.sandbox import netfilter
        from engine.sandbox.policy import host_id

        fix = "only needed for rules with network default or network allow; networked runs are refused until then"
        if not self.info:
            return Check("network filter", False, "podman service not reachable", "fix the podman service first")
        host = self.info["host"]
        podman_uid = (host_id(host["idMappings"]["uidmap"], 0) or 0) if host["security"]["rootless"] else 0
        try:
            netfilter.tools()
        except SandboxUnavailable as exc:
            return Check("network filter", False, str(exc), fix)
        refused = netfilter.can_enter(podman_uid)
        if refused:
            return Check("network filter", False, refused, f"run herald as root or as the sandbox user ({fix})")
        if not self.tun().ok:
            return Check("network filter", True, "iptables and nsenter present; no trial (no /dev/net/tun)")
        try:
            result = self._trial(network="default")
        except Exception as exc:
            return Check("network filter", False, f"a trial run with network default failed: {exc}", fix)
        line = next((e for e in result.enforced if e.startswith("netfilter:")), "no filter reported")
        return Check("network filter", True, f"trial run with network default: {line}")

    def scripts_folder(self) -> Check:
        from engine.sandbox.policy import RUN_UID_FIRST, access_problem, host_id

        folder = self.config.scripts_dir
        if folder is None or not folder.is_dir():
            return Check("scripts folder", False, f"{folder} does not exist", f"mkdir -m 755 -p {folder}")
        if not self.info:
            return Check("scripts folder", False, "podman service not reachable", "fix the podman service first")
        host = self.info["host"]
        if host["security"]["rootless"]:
            uid = host_id(host["idMappings"]["uidmap"], RUN_UID_FIRST)
            gid = host_id(host["idMappings"]["gidmap"], RUN_UID_FIRST)
            who = f"the per-run uids (host uid {uid}...)"
        else:
            uid = gid = 65534
            who = "nobody"
        if uid is None or gid is None:
            return Check("scripts folder", False, "the run uids are not mapped", "fix subuid/subgid first")
        problem = access_problem(folder.resolve(), None, uid, gid, who)
        if problem:
            return Check("scripts folder", False, problem,
                         f"chmod 755 on {folder} and every folder above it; chmod 644 the scripts")
        unreadable = [p.name for p in sorted(folder.iterdir()) if p.is_file() and p.stat().st_mode & 0o004 == 0]
        if unreadable:
            return Check("scripts folder", False, f"not world-readable: {', '.join(unreadable[:5])}",
                         f"chmod 644 {' '.join(str(folder / n) for n in unreadable[:5])}")
        return Check("scripts folder", True, f"{folder} readable by {who}")

    def trial_run(self) -> Check:
        """A real run of a one-line script: proves the whole path, and shows what was enforced."""
        if self.client is None:
            return Check("trial run", False, "podman service not reachable", "fix the podman service first")
        try:
            result = self._trial()
        except Exception as exc:
            return Check("trial run", False, f"a one-line script failed: {exc}", "see the checks above")
        if result.exit_code != 0 or result.output != "ok\n":
            return Check("trial run", False, f"exit {result.exit_code}, output {result.output[:200]!r}",
                         "see the checks above")
        return Check("trial run", True, f"{result.duration_s * 1000:.0f} ms; enforced: {', '.join(result.enforced)}")

    def _trial(self, **options: Any) -> Any:
        from engine.sandbox.runner import Sandbox

        folder = Path(tempfile.mkdtemp(prefix="herald-doctor-", dir="/tmp"))
        try:
            folder.chmod(0o755)
            (folder / "doctor.sh").write_text("echo ok\n")
            (folder / "doctor.sh").chmod(0o644)
            # Reuses the service found or started above: a Sandbox only starts one if nothing answers.
            return asyncio.run(_trial(Sandbox(config=self.sb, scripts_dir=folder), **options))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.service is not None:
            self.service.stop()


async def _trial(sb: Any, **options: Any) -> Any:
    await sb.start()
    try:
        if sb.problem:
            raise SandboxUnavailable(sb.problem)
        return await sb.run("doctor.sh", [], timeout_s=30, task_id="herald-doctor", **options)
    finally:
        await sb.close()


def _subid_size(path: str, name: str, uid: int) -> int:
    total = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)) and re.fullmatch(r"\d+", parts[2]):
                    total += int(parts[2])
    except OSError:
        return 0
    return total


def run_doctor(args: argparse.Namespace) -> int:
    doctor = _Doctor(load_for(args))
    failed = 0
    try:
        for check in doctor.checks():
            try:
                result = check()
            except Exception as exc:  # a check that crashes is a failed check, with what it hit
                result = Check(check.__name__, False, f"check crashed: {exc!r}", "report this as a bug")
            print(f"{'OK  ' if result.ok else 'FAIL'}  {result.name}: {result.detail}")
            if not result.ok:
                failed += 1
                print(f"      fix: {result.fix}")
    finally:
        doctor.close()
    print(f"{'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return EXIT_OK if not failed else EXIT_FAILED
