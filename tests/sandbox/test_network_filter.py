"""Runs with a network: the host's own services stay out of reach, an allow-list lets through only its entries, and a
run whose filter cannot be set never starts (issue 18 item 11). Real rootless Podman, real listeners on the host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from podman import PodmanClient

from engine.core.errors import SandboxError
from engine.sandbox.policy import TASK_LABEL
from engine.sandbox.runner import Sandbox, SandboxResult

Record = Callable[[str, str, str], None]
REPO = Path(__file__).resolve().parents[2]


class _Service:
    """A TCP service of the host on 0.0.0.0 (every address), counting the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self._sock = socket.create_server(("0.0.0.0", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _host_ip() -> str:
    """The host's address on its main interface (not loopback): where a service on 0.0.0.0 answers too."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))  # no packet is sent
        return str(probe.getsockname()[0])


@pytest.fixture
def services() -> Iterator[tuple[_Service, _Service]]:
    a, b = _Service(), _Service()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def _connect(sb: Sandbox, *targets: str, **options: object) -> SandboxResult:
    return await sb.run("connect.sh", targets, timeout_s=30, task_id=f"net-{uuid.uuid4().hex[:8]}",
                        **options)  # type: ignore[arg-type]


async def test_network_default_does_not_reach_the_hosts_own_services(
    sandbox: Sandbox, services: tuple[_Service, _Service], record: Record
) -> None:
    service, _ = services
    ip = _host_ip()
    with socket.create_connection((ip, service.port), timeout=2):  # the service answers on that address
        pass
    result = await _connect(sandbox, f"{ip}:{service.port}", f"10.0.2.2:{service.port}", network="default")
    assert f"nc {ip}:{service.port} rc=1" in result.output, result.output
    assert f"nc 10.0.2.2:{service.port} rc=1" in result.output
    assert "tap0" in result.output  # it had a network: the filter, not its absence, refused
    assert service.accepted == 1, "a script with network default reached a service of the host"
    enforced = next(e for e in result.enforced if e.startswith("netfilter:"))
    assert ip in enforced and "host addresses blocked" in enforced
    record("network default: TCP to a host service on 0.0.0.0 (host address)",
           "refused; the service saw only the host's own connection", enforced)


async def test_network_allow_reaches_its_entries_only(
    sandbox: Sandbox, services: tuple[_Service, _Service], record: Record
) -> None:
    allowed, other = services
    ip = _host_ip()
    result = await _connect(sandbox, f"{ip}:{allowed.port}", f"{ip}:{other.port}", f"10.0.2.2:{other.port}",
                            network="allow", network_allow=[f"{ip}:{allowed.port}"])
    assert f"nc {ip}:{allowed.port} rc=0" in result.output, result.output
    assert f"nc {ip}:{other.port} rc=1" in result.output
    assert f"nc 10.0.2.2:{other.port} rc=1" in result.output
    assert allowed.accepted == 1 and other.accepted == 0
    assert f"netfilter: only {ip}:{allowed.port} (tcp, udp); IPv6 none" in result.enforced
    record("network allow A:P: port A, then port B of the same host",
           "A connected (1 accepted), B refused (0 accepted)", f"netfilter: only {ip}:{allowed.port}")


async def test_network_none_still_has_no_network(
    sandbox: Sandbox, services: tuple[_Service, _Service], record: Record
) -> None:
    service, _ = services
    result = await _connect(sandbox, f"{_host_ip()}:{service.port}")
    assert "Network is unreachable" in result.output and result.output.rstrip().splitlines()[-1] == "lo"
    assert service.accepted == 0
    assert not any(e.startswith("netfilter:") for e in result.enforced)  # nothing to filter: only lo
    record("network none (the default)", "Network is unreachable, only lo", "network=none")


async def test_bad_allow_entries_are_refused_before_anything_runs(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="has no port"):
        await _connect(sandbox, network="allow", network_allow=["192.0.2.10"])
    with pytest.raises(ValueError, match="needs at least one"):
        await _connect(sandbox, network="allow")
    with pytest.raises(ValueError, match="only for network \"allow\""):
        await _connect(sandbox, network="default", network_allow=["192.0.2.10:80"])
    with pytest.raises(ValueError, match="'db_1.example' is not a valid host name"):
        await _connect(sandbox, network="allow", network_allow=["db_1.example:5432"])
    with pytest.raises(ValueError, match="IPv6 addresses are not supported"):
        await _connect(sandbox, network="allow", network_allow=["[2001:db8::1]:443"])


_CHILD = """
import asyncio, json, sys
from pathlib import Path
from engine.sandbox.runner import Sandbox, SandboxConfig

async def main() -> None:
    url, folder, task, network, allow, targets, script = json.loads(sys.argv[1])
    sb = Sandbox(config=SandboxConfig(podman_url=url, autostart=False), scripts_dir=Path(folder))
    await sb.start()
    try:
        r = await sb.run(script, targets, timeout_s=30, task_id=task, network=network, network_allow=allow)
        print(json.dumps({"output": r.output, "enforced": r.enforced}))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        await sb.close()

asyncio.run(main())
"""


def _run_child(prefix: list[str], user: str | None, podman_url: str, folder: Path, network: str, allow: list[str],
               targets: list[str], script: str = "connect.sh") -> tuple[str, dict[str, object]]:
    """A Herald process of its own (run as `user`, under `prefix`): its task id and what its run returned."""
    task = f"net-child-{uuid.uuid4().hex[:8]}"
    arg = json.dumps([podman_url, str(folder), task, network, allow, targets, script])
    # HOME=/tmp: podman-py reads ~/.config, and root's home is closed to the sandbox user.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    done = subprocess.run([*prefix, sys.executable, "-c", _CHILD, arg], capture_output=True, text=True,
                          timeout=120, cwd="/tmp", user=user, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return task, json.loads(done.stdout.strip().splitlines()[-1])


def _why_the_sandbox_user_cannot_run_herald() -> str:
    probe = subprocess.run([sys.executable, "-c", "import engine.sandbox.runner"], capture_output=True, text=True,
                           timeout=60, cwd="/tmp", user="sandboxer", check=False,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/tmp"})
    return probe.stderr.strip()[-200:] if probe.returncode != 0 else ""


def _containers_of(podman_url: str, task: str) -> list[str]:
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        return [c.id for c in client.containers.list(all=True, filters=[f"label={TASK_LABEL}={task}"])]


async def test_a_run_whose_filter_cannot_be_set_never_starts(
    sandbox: Sandbox, podman_url: str, attack_dir: Path, services: tuple[_Service, _Service], record: Record
) -> None:
    # Herald as root, but without CAP_SYS_ADMIN: Podman creates and initialises the container, and entering its
    # network namespace then fails. The run must be refused, the script never started, the container removed.
    service, _ = services
    target = f"{_host_ip()}:{service.port}"
    no_setns = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"]
    task, outcome = _run_child(no_setns, None, podman_url, attack_dir, "default", [], [target])
    error = str(outcome.get("error"))
    assert "SandboxError" in error and "could not set the run's packet filter" in error, outcome
    assert "refusing to run" in error
    assert service.accepted == 0
    assert _containers_of(podman_url, task) == []
    record("network run whose filter cannot be set (no CAP_SYS_ADMIN)", "refused before the script started",
           "fail closed: filter set and read back before start")


async def test_the_sandbox_user_itself_can_set_the_filter(
    sandbox: Sandbox, podman_url: str, attack_dir: Path, services: tuple[_Service, _Service], record: Record
) -> None:
    # Herald running as the sandbox user (not root) enters the run's namespace through its rootless user namespace.
    problem = _why_the_sandbox_user_cannot_run_herald()
    if problem:
        pytest.skip(f"the sandbox user cannot run this checkout's Python ({REPO}): {problem}")
    allowed, other = services
    ip = _host_ip()
    _, outcome = _run_child([], "sandboxer", podman_url, attack_dir, "allow", [f"{ip}:{allowed.port}"],
                            [f"{ip}:{allowed.port}", f"{ip}:{other.port}"])
    assert "error" not in outcome, outcome
    assert f"nc {ip}:{allowed.port} rc=0" in str(outcome["output"]) and f"nc {ip}:{other.port} rc=1" in str(
        outcome["output"])
    assert allowed.accepted == 1 and other.accepted == 0
    record("network allow, Herald as the sandbox user", "A connected, B refused", "nsenter --user --net")


# --- host names: resolved on the host when the run is created, pinned in the container's /etc/hosts -----------------


def _own_files(tmp: Path, **files: str) -> list[str]:
    """A prefix that runs a command in a mount namespace of its own where /etc/FILE reads `files[FILE]`: a name the
    test controls, resolved by the real resolver, without touching the machine's /etc/hosts."""
    binds = []
    for name, text in files.items():
        (tmp / name).write_text(text)
        binds.append(f'mount --bind {tmp / name} /etc/{name}')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", " && ".join([*binds, 'exec "$@"']),
            "own-etc"]


async def test_network_allow_by_name_reaches_its_addresses_with_dns_blocked(
    podman_url: str, attack_dir: Path, tmp_path: Path, services: tuple[_Service, _Service], record: Record
) -> None:
    allowed, other = services
    ip = _host_ip()
    prefix = _own_files(tmp_path, hosts=f"127.0.0.1 localhost\n{ip} db.herald.test\n")
    _, outcome = _run_child(prefix, None, podman_url, attack_dir, "allow", [f"DB.herald.test:{allowed.port}"],
                            ["other.herald.test", f"db.herald.test:{allowed.port}", f"db.herald.test:{other.port}"],
                            script="lookup.sh")
    assert "error" not in outcome, outcome
    output, enforced = str(outcome["output"]), list(outcome["enforced"])  # type: ignore[call-overload]
    # Reached by name through the pinned /etc/hosts entry; the other port of the same address stays closed.
    assert f"nc db.herald.test:{allowed.port} rc=0" in output, output
    assert f"nc db.herald.test:{other.port} rc=1" in output
    assert allowed.accepted == 1 and other.accepted == 0
    # DNS is not let out: the lookup of another name never leaves the container (the filter refuses the packet).
    assert "nslookup other.herald.test rc=1" in output
    assert "write to '10.0.2.3': Operation not permitted" in output
    assert f"/etc/hosts db.herald.test:{ip}" in enforced
    assert f"netfilter: only {ip}:{allowed.port} (tcp, udp); IPv6 none" in enforced
    record("network allow by host name (resolved on the host)", "name reached via /etc/hosts; other port refused; "
           "DNS lookup refused", f"/etc/hosts db.herald.test:{ip}, netfilter: only {ip}:{allowed.port}")


async def test_a_name_that_does_not_resolve_fails_the_run_before_it_starts(
    sandbox: Sandbox, podman_url: str, record: Record
) -> None:
    task = f"net-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SandboxError) as failed:
        await sandbox.run("connect.sh", ["192.0.2.10:443"], timeout_s=30, task_id=task, network="allow",
                          network_allow=["192.0.2.10:443", "nothing.invalid:5432"])
    assert str(failed.value).startswith("network allow 'nothing.invalid:5432': the name does not resolve (")
    assert "refusing to run" in str(failed.value)
    assert _containers_of(podman_url, task) == []  # refused before a container existed
    record("network allow with a name that does not resolve", "run refused before it started",
           "fail closed: resolved on the host first")


async def test_a_name_that_resolves_to_loopback_is_refused(sandbox: Sandbox) -> None:
    # localhost is 127.0.0.1 on every host: inside the container that is the script's own loopback, never the host's.
    with pytest.raises(SandboxError, match="network allow 'localhost:80': the name resolves to 127.0.0.1, which is "
                                           "not an address a script can connect out to"):
        await _connect(sandbox, network="allow", network_allow=["localhost:80"])


async def test_a_resolver_that_does_not_answer_fails_the_run_in_bounded_time(
    podman_url: str, attack_dir: Path, tmp_path: Path, record: Record
) -> None:
    # The child's resolver is a UDP socket of ours that reads queries and never answers.
    try:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.83.17.53", 53))
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.83.17.53:53 for a silent resolver: {exc}")
    try:
        prefix = _own_files(tmp_path, hosts="127.0.0.1 localhost\n", **{"resolv.conf": "nameserver 127.83.17.53\n"})
        task, outcome = _run_child(prefix, None, podman_url, attack_dir, "allow", ["db.herald.test:5432"],
                                   ["db.herald.test:5432"])
    finally:
        silent.close()
    assert str(outcome.get("error")).startswith(
        "SandboxError: network allow 'db.herald.test:5432': the name does not resolve (no answer from the host's "
        "resolver within 5 s)"), outcome
    assert _containers_of(podman_url, task) == []
    record("network allow with a resolver that never answers", "run refused after the bound, never started",
           "resolve.RESOLVE_TIMEOUT_S")
