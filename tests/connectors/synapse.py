"""A real Synapse homeserver for the Matrix tests, on a free loopback port, for one pytest session.

Synapse is installed by the project's own `.ci/setup-synapse` into its own venv (/opt/herald-synapse, or
$HERALD_SYNAPSE_PREFIX). Where it is missing the Matrix tests skip, saying so, unless HERALD_REQUIRE_SYNAPSE=1
(as in CI), where they fail. The config is written from tests/connectors/synapse_homeserver.yaml; users are
registered through the shared-secret admin API (`/_synapse/admin/v1/register`: a nonce, then an HMAC-SHA1 over
nonce, user, password and admin flag), as Synapse's own register_new_matrix_user does.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PREFIX = Path(os.environ.get("HERALD_SYNAPSE_PREFIX", "/opt/herald-synapse"))
SECRET = "herald-test-registration-secret"
LOG_YAML = """version: 1
formatters:
  precise: {{format: '%(asctime)s %(name)s %(levelname)s %(request)s %(message)s'}}
handlers:
  file: {{class: logging.FileHandler, formatter: precise, filename: {dir}/homeserver.log}}
loggers:
  synapse.storage.SQL: {{level: WARNING}}
root: {{level: INFO, handlers: [file]}}
disable_existing_loggers: false
"""


def missing_reason() -> str | None:
    """Why Synapse cannot run here, or None."""
    if not (PREFIX / "bin" / "python").exists():
        return f"Synapse is not installed in {PREFIX}: run .ci/setup-synapse"
    return None


@dataclass
class Account:
    user_id: str
    password: str
    access_token: str
    device_id: str


@dataclass
class Homeserver:
    synapse: Synapse
    alice: Account  # admin on Herald, and a Synapse admin (to lower the bot's rate limit)
    bob: Account
    carol: Account  # no principal's account
    bot: Account  # Herald's own account, on a fixed device


class Synapse:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        d = self.folder
        d.mkdir(parents=True, exist_ok=True)
        template = (HERE / "synapse_homeserver.yaml").read_text()
        config = template.replace("{dir}", str(d)).replace("{port}", str(self.port)).replace("{secret}", SECRET)
        (d / "homeserver.yaml").write_text(config)
        (d / "log.yaml").write_text(LOG_YAML.format(dir=d))
        python = str(PREFIX / "bin" / "python")
        subprocess.run([python, "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml"), "--generate-keys"],
                       check=True, capture_output=True, cwd=d)
        self._stdout = (d / "stdout.log").open("wb")
        self._process = subprocess.Popen([python, "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml")],
                                         cwd=d, stdout=self._stdout, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Synapse exited ({self._process.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.read() == b"OK":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Synapse did not answer /health within 60s: {self.log_tail()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None:
            self._stdout.close()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("stdout.log", "homeserver.log"):
            path = self.folder / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return text

    def register(self, user: str, password: str, *, admin: bool = False, device_id: str | None = None) -> Account:
        """Create `user` with the shared secret, then log in (on `device_id`, if given) for a token."""
        nonce = self.call("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        self.call("POST", "/_synapse/admin/v1/register", {"nonce": nonce, "username": user, "password": password,
                                                          "admin": admin, "mac": mac.hexdigest()})
        return self.login(user, password, device_id=device_id)

    def login(self, user: str, password: str, *, device_id: str | None = None) -> Account:
        """A new access token for `user` (on `device_id`, or a new device)."""
        login: dict[str, Any] = {"type": "m.login.password", "password": password,
                                 "identifier": {"type": "m.id.user", "user": user}}
        if device_id:
            login["device_id"] = device_id
        answer = self.call("POST", "/_matrix/client/v3/login", login)
        return Account(answer["user_id"], password, answer["access_token"], answer["device_id"])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()!r}") from None


def _die_with_parent() -> None:
    """Synapse gets SIGTERM if the test run is killed before it can stop it (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
