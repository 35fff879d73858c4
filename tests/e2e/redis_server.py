"""A real redis-server for the queue tests: on a free loopback port, with a password, ACL users, TLS and an
append-only file as asked; it can be killed and started again on the same port and folder (an outage)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port

PASSWORD = "redis-requirepass-0123456789"
ACL_USER, ACL_PASSWORD = "herald", "herald-acl-password-0123456789"
SIGNING_KEY = "queue-signing-key-for-tests-0123456789abcdef"


def make_tls_files(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, made with openssl."""
    cert, key = folder / "redis-cert.pem", folder / "redis-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@dataclass
class RedisServer:
    folder: Path
    password: str | None = PASSWORD
    acl_user: bool = False  # also a user ACL_USER (password ACL_PASSWORD) that may use herald:* keys only
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve TLS only
    appendonly: bool = False  # persist every write (fsync always), so a restart keeps the streams
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (bash .ci/setup installs it)"
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.acl_user:
            args += ["--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~herald:*", "&*", "+@all", "-@dangerous"]
        if self.tls is not None:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                     str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        return args

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{user or ''}:{password}@" if password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "redis.log"
        before = log.read_text().count("Ready to accept connections") if log.exists() else 0
        self.process = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count("Ready to accept connections") > before:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start:\n{log.read_text()[-2000:] if log.exists() else ''}")

    def kill(self) -> None:
        """Gone at once, like a crash (SIGKILL): what it had acknowledged is on disk only with `appendonly`."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def cli(self, *command: str) -> str:
        """Run one command with redis-cli as the admin (the requirepass user)."""
        args = ["redis-cli", "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            args += ["-a", self.password]
        if self.tls:
            args += ["--tls", "--cacert", str(self.tls[0])]
        return subprocess.run([*args, *command], check=True, capture_output=True, text=True).stdout


def queue_section(url: str, **settings: object) -> str:
    """A `[queue]` section for this Redis (signed with SIGNING_KEY unless the settings say otherwise)."""
    values: dict[str, object] = {"redis_url": url, "signing_key": SIGNING_KEY} | settings
    lines = [f"{key} = {_toml(value)}" for key, value in values.items() if value is not None]
    return "\n[queue]\n" + "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def herald(config: Path, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`herald ARGS --config CONFIG` as its own process (this tree's code), stdout and stderr into `log`."""
    import sys

    from tests.support import REPO

    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *args, "--config", str(config)],
                                cwd=config.parent, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Block until `text` appears in `log` (fail early, with the log, if `process` exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {log.name} (exit code {process.poll()}):\n"
                         f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")


def add_work_rule(rules_dir: Path, *, sleep_s: float) -> None:
    """`/work <n>` (admin) runs work.sh n, which prints "start n", sleeps, prints "done n"."""
    (rules_dir / "work.rules").write_text('on command work <n: word> require role admin run work.sh args '
                                          '"{command.n}"\n')
    script = rules_dir / "scripts" / "work.sh"
    script.write_text(f'#!/bin/sh\necho "start $1"\nsleep {sleep_s}\necho "done $1"\n')
    os.chmod(script, 0o755)


# Worker names unique to this test run: a worker removes leftover containers of its name when it starts, and other
# test runs on the same host share the sandbox user's Podman.
_RUN = secrets.token_hex(3)
W1, W2 = f"w1-{_RUN}", f"w2-{_RUN}"
