"""Find or start the Podman REST service that runs sandboxed scripts for one user.

Nothing starts Podman's service on a host without a systemd user session, so the engine starts
`podman system service` itself when the socket does not answer, and stops only what it started.
Running as root, it starts the service for an unprivileged user (rootless Podman); running as a
normal user, it starts its own. A service started with an idle timeout (`--time`) exits by itself when unused;
`start` then starts a fresh one. Everything here is blocking: the sandbox calls it from its worker
thread, never from the event loop.

Every failure raises `engine.errors.SandboxUnavailable` with what is missing and how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

from engine.core.errors import SandboxError, SandboxUnavailable
from engine.sandbox.libpod import Libpod

__all__ = ["PodmanService", "UserInfo", "build_image", "image_exists", "ping", "podman_as", "socket_url_for",
           "user_info"]

log = logging.getLogger(__name__)

SETUP_HINT = "run `bash .ci/setup-sandbox` as root"
IMAGE_HINT = "run `herald sandbox image build` as root"
BUSYBOX = "/bin/busybox"  # busybox-static: one file, no libraries, so the image needs nothing else
# The applets a shell script commonly needs; busybox sh runs its other applets internally anyway, but
# `command -v`, `env foo` and exec-by-path need a real file.
APPLETS = ("sh cat echo ls id date sleep head tail wc grep sed tr printf env mkdir rm cp mv df du touch true "
           "false test expr cut sort uniq").split()
INSTALL_HINT = "apt-get install podman runc uidmap slirp4netns"
ROOTFUL_SOCKET = "/run/podman/podman.sock"
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class UserInfo:
    """Who the Podman service runs as; `is_current` means no user switch is needed to start it."""

    name: str
    uid: int
    gid: int
    home: str
    is_current: bool


def user_info(user: str | None) -> UserInfo:
    """Look up `user` (None = the current user); raise SandboxUnavailable if it does not exist."""
    if user is None:
        pw = pwd.getpwuid(os.geteuid())
    else:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise SandboxUnavailable(
                f"user {user!r} does not exist: {SETUP_HINT} (or `useradd -m {user}`)"
            ) from None
    return UserInfo(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_uid == os.geteuid())


def _runtime_dir_for(info: UserInfo) -> str:
    """The user's XDG_RUNTIME_DIR as Podman would pick it on this host."""
    if info.is_current and os.environ.get("XDG_RUNTIME_DIR"):
        return os.environ["XDG_RUNTIME_DIR"]
    logind_dir = f"/run/user/{info.uid}"
    # Without logind, rootless podman falls back to /tmp/podman-run-UID; the CLI and the service must
    # agree on it (.ci/setup-sandbox uses the same rule).
    return logind_dir if os.path.isdir(logind_dir) else f"/tmp/podman-run-{info.uid}"


def socket_url_for(user: str | None) -> str:
    """The default `unix://` URL of `user`'s Podman service (None = the current user; root = rootful)."""
    info = user_info(user)
    if info.uid == 0:
        return f"unix://{ROOTFUL_SOCKET}"
    return f"unix://{_runtime_dir_for(info)}/podman/podman.sock"


def ping(url: str, *, timeout_s: float = 2.0) -> bool:
    """True if a Podman service answers at `url`."""
    try:
        return Libpod(url, timeout_s).ping()
    except SandboxError:  # not a URL Podman can be reached at
        return False


def _socket_path(url: str) -> str:
    if not url.startswith("unix://"):
        raise SandboxUnavailable(
            f"the podman service at {url} does not answer, and only a local unix:// service can be "
            "started automatically: start it there, or leave podman_url unset"
        )
    return url.removeprefix("unix://")


def _remove_stale_socket(path: str) -> None:
    """Delete a socket file nobody listens on (a crashed service), so a new service can bind it."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            log.info("removing stale podman socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        probe.close()


def _ensure_private_dir(path: str, info: UserInfo) -> None:
    """Create `path` owned by the user, mode 700; refuse a symlink or someone else's directory.

    These directories live in /tmp on hosts without logind, where anyone could plant a symlink
    before us; as root we must not chown through it.
    """
    try:
        os.mkdir(path, 0o700)
        if not info.is_current:
            os.chown(path, info.uid, info.gid, follow_symlinks=False)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != info.uid:
        raise SandboxUnavailable(
            f"{path} is not a directory owned by {info.name}: remove it (it is the user's podman "
            f"runtime dir) and {SETUP_HINT}"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _has_subids(info: UserInfo) -> bool:
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, encoding="utf-8") as fh:
                owners = {line.split(":", 1)[0] for line in fh if line.count(":") == 2}
        except OSError:
            return False
        if info.name not in owners and str(info.uid) not in owners:
            return False
    return True


def _preflight(info: UserInfo) -> None:
    """Raise SandboxUnavailable for the host problems that would make the service fail to start."""
    if shutil.which("podman", path=_SAFE_PATH) is None:
        raise SandboxUnavailable(f"podman is not installed: {INSTALL_HINT}")
    if shutil.which("runc", path=_SAFE_PATH) is None:
        raise SandboxUnavailable(f"runc is not installed (crun fails on cgroup v1 hosts): {INSTALL_HINT}")
    if info.uid == 0:
        return
    if shutil.which("newuidmap", path=_SAFE_PATH) is None:
        raise SandboxUnavailable(f"newuidmap is missing (rootless podman needs it): {INSTALL_HINT}")
    if not _has_subids(info):
        raise SandboxUnavailable(
            f"user {info.name!r} has no subuid/subgid range in /etc/subuid and /etc/subgid: {SETUP_HINT} "
            f"(or `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {info.name}`)"
        )
    if not info.is_current and os.geteuid() != 0:
        raise SandboxUnavailable(
            f"cannot start the podman service of {info.name!r} as uid {os.geteuid()}: start it as that "
            f"user (`podman system service --time=0 {socket_url_for(info.name)}`) or run herald as root"
        )


class PodmanService:
    """A Podman REST service for one user: reuse one that answers, else start (and later stop) our own."""

    def __init__(self, *, runtime: str = "runc", ready_timeout_s: float = 15.0, idle_timeout_s: int = 0) -> None:
        self._runtime = runtime
        self._ready_timeout_s = ready_timeout_s
        self._idle_timeout_s = idle_timeout_s  # a service we start exits after this long without requests; 0 never
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.url: str | None = None

    @property
    def started_by_us(self) -> bool:
        """True while a service process we spawned is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exited(self) -> bool:
        """True when a service process we spawned has ended (idle timeout, crash, killed) and not been replaced."""
        return self._proc is not None and self._proc.poll() is not None

    def start(self, user: str | None, url: str | None = None) -> str:
        """Return the URL of `user`'s answering service, starting it first if needed (blocking, <= 15 s).

        `url` overrides the default socket of that user (it must be unix:// to be started here).
        """
        info = user_info(user)
        url = url or socket_url_for(user)
        if ping(url):
            self.url = url
            return url
        if self.started_by_us:
            raise SandboxUnavailable(
                f"the podman service we started at {url} is running but does not answer: restart herald"
            )
        if self._proc is not None:
            # Ours ended: by itself after its idle timeout (rc 0), or it died (crash, OOM, killed). Start a fresh one.
            if self._proc.returncode == 0 and self._idle_timeout_s:
                log.info("podman service pid %d exited when idle; starting it again", self._proc.pid)
            else:
                log.warning("podman service pid %d exited with %s; restarting it", self._proc.pid,
                            self._proc.returncode)
            self._forget()
        sock = _socket_path(url)
        _preflight(info)
        env = {"PATH": _SAFE_PATH, "HOME": info.home, "USER": info.name, "LOGNAME": info.name}
        switch_to: UserInfo | None = None
        if info.uid != 0:
            runtime_dir = os.path.dirname(os.path.dirname(sock))
            # Podman creates XDG_RUNTIME_DIR but not XDG_RUNTIME_DIR/podman: without it, bind() fails.
            _ensure_private_dir(runtime_dir, info)
            _ensure_private_dir(os.path.dirname(sock), info)
            env["XDG_RUNTIME_DIR"] = runtime_dir
            if not info.is_current:
                switch_to = info
        else:
            os.makedirs(os.path.dirname(sock), mode=0o700, exist_ok=True)
        _remove_stale_socket(sock)
        # An unlinked temp file, not a pipe: nobody drains a pipe during the service's lifetime, and
        # a full pipe would freeze it. We read it only if the service dies on start-up.
        stderr = tempfile.TemporaryFile()
        cmd = ["podman", "--runtime", self._runtime, "system", "service", f"--time={self._idle_timeout_s}", url]
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C in herald's terminal must not kill it before we do
                # Python drops to the user itself: no su/sudo, no inherited supplementary groups.
                user=switch_to.uid if switch_to else None,
                group=switch_to.gid if switch_to else None,
                extra_groups=[] if switch_to else None,
            )
        except OSError as exc:
            stderr.close()
            raise SandboxUnavailable(f"could not start `{' '.join(cmd)}`: {exc}; {INSTALL_HINT}") from exc
        self._proc, self._stderr = proc, stderr
        # Reaped as soon as it exits (an idle timeout, with nobody asking for a while), so it never lingers as a zombie.
        threading.Thread(target=proc.wait, name="herald-podman-reaper", daemon=True).start()
        log.info("started podman service for %s at %s (pid %d)", info.name, url, proc.pid)
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                detail = self._stderr_tail()
                self._forget()
                raise SandboxUnavailable(
                    f"the podman service for {info.name!r} exited with {proc.returncode} at start-up: "
                    f"{detail or 'no output'}; check `podman info` as that user, or {SETUP_HINT}"
                )
            if os.path.exists(sock) and ping(url):
                self.url = url
                return url
            time.sleep(0.05)  # blocking by design: this runs in the sandbox's worker thread
        self.stop()
        raise SandboxUnavailable(
            f"the podman service for {info.name!r} did not answer at {url} within "
            f"{self._ready_timeout_s:.0f} s; check `podman info` as that user"
        )

    def stop(self) -> None:
        """Terminate the service if we started it; a service someone else runs is left alone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.info("stopped podman service (pid %d, rc %s)", proc.pid, proc.returncode)
        self._forget()

    def _stderr_tail(self, limit: int = 800) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:]

    def _forget(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
        self._proc, self._stderr = None, None


def podman_as(user: str | None, args: list[str], *, stdin: bytes | None = None,
              timeout_s: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Blocking: run the podman CLI as `user` (None = us) with the same environment the service gets."""
    info = user_info(user)
    env = {"PATH": _SAFE_PATH, "HOME": info.home, "USER": info.name, "LOGNAME": info.name}
    if info.uid != 0:
        sock = _socket_path(socket_url_for(user))
        runtime_dir = os.path.dirname(os.path.dirname(sock))
        _ensure_private_dir(runtime_dir, info)
        env["XDG_RUNTIME_DIR"] = runtime_dir
    switch = not info.is_current
    return subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, env=env, cwd="/", timeout=timeout_s, check=False,
        user=info.uid if switch else None, group=info.gid if switch else None, extra_groups=[] if switch else None,
    )


def image_exists(user: str | None, image: str) -> bool:
    return podman_as(user, ["image", "exists", image]).returncode == 0


def build_image(user: str | None, image: str, *, force: bool = False) -> str:
    """Blocking: import the minimal sandbox image (static busybox + applet links) into `user`'s store.

    The one place the image is made: `herald sandbox image build` and .ci/setup-sandbox both call this.
    Returns what was done, for people; raises SandboxUnavailable with the fix when it cannot.
    """
    if shutil.which("podman", path=_SAFE_PATH) is None:
        raise SandboxUnavailable(f"podman is not installed: {INSTALL_HINT}")
    if not os.path.isfile(BUSYBOX):
        raise SandboxUnavailable(f"{BUSYBOX} is missing: apt-get install busybox-static")
    info = user_info(user)
    if not info.is_current and os.geteuid() != 0:
        raise SandboxUnavailable(f"building the image in the store of {info.name!r} needs root: {IMAGE_HINT}")
    if not force and image_exists(user, image):
        return f"image {image} exists in the store of {info.name} (use --force to rebuild it)"
    import tarfile  # here, not at the top: only building the image needs it, never a running engine

    with open(BUSYBOX, "rb") as fh:
        busybox = fh.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # uid/gid 0: inside the user namespace that is container root (= the sandbox user on the host).
        for name, mode in (("bin", 0o755), ("tmp", 0o1777), ("scripts", 0o755)):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, mode
            tar.addfile(entry)
        entry = tarfile.TarInfo("bin/busybox")
        entry.size, entry.mode = len(busybox), 0o755
        tar.addfile(entry, io.BytesIO(busybox))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    done = podman_as(user, ["import", "--quiet", "--change", 'CMD ["/bin/sh"]', "-", image], stdin=buf.getvalue())
    if done.returncode != 0:
        raise SandboxUnavailable(
            f"podman import of {image} as {info.name} failed: {done.stderr.decode(errors='replace').strip()[-600:]}"
        )
    return f"image {image} built in the store of {info.name}: busybox-static and {len(APPLETS)} applet links"
