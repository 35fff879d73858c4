"""The escape suite: scripts that misbehave on purpose, and the proof that each fails safely.

Each test runs one attack from `attacks.py` in the real sandbox (rootless Podman as `sandboxer`), asserts the
specific outcome (refused, killed, capped) and that the engine is still healthy, and records a row for the
summary table printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from podman import PodmanClient

from engine.sandbox.policy import memory_budget
from engine.sandbox.runner import Sandbox, SandboxConfig, SandboxResult

Record = Callable[[str, str, str], None]


async def _run(sb: Sandbox, script: str, *args: str, timeout_s: float = 20, **options: object) -> SandboxResult:
    return await sb.run(script, args, timeout_s=timeout_s, task_id=f"escape-{uuid.uuid4().hex[:8]}",
                        **options)  # type: ignore[arg-type]


def _mechanism(result: SandboxResult, word: str) -> str:
    """The line of the run's limit plan that mentions `word`, as the sandbox itself reported it."""
    return next(p for p in result.enforced if word in p)


def _tasks_of(uid: int) -> int:
    """Processes and threads on the host whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as fh:
                uid_line = next(line for line in fh if line.startswith("Uid:"))
            if int(uid_line.split()[1]) == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except (OSError, StopIteration):
            continue  # exited while we looked
    return count


def _sandboxer_commands() -> set[str]:
    out = subprocess.run(["ps", "-u", "sandboxer", "-o", "comm="], capture_output=True, text=True, check=False)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


async def _assert_healthy(sb: Sandbox) -> None:
    """The engine's sandbox still runs an ordinary script after the attack."""
    result = await _run(sb, "hello.sh")
    assert result.exit_code == 0 and result.output.startswith("hello from "), result.output


class _Listener:
    """TCP listeners on the host (127.0.0.1 and the host's own address, one port) that count connections."""

    def __init__(self, host_ip: str) -> None:
        self.accepted = 0
        self._stop = threading.Event()
        self._socks = []
        first = socket.create_server(("127.0.0.1", 0))
        self.port = first.getsockname()[1]
        self._socks.append(first)
        if host_ip != "127.0.0.1":
            self._socks.append(socket.create_server((host_ip, self.port)))
        for s in self._socks:
            s.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for s in self._socks:
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                self.accepted += 1
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


def _host_ip() -> str:
    """The host's address on its main interface (no packet is sent), or loopback when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@pytest.fixture
def listener() -> Iterator[_Listener]:
    lis = _Listener(_host_ip())
    try:
        yield lis
    finally:
        lis.close()


# --- network --------------------------------------------------------------------------------------------


async def test_tcp_to_the_hosts_loopback_never_connects(sandbox: Sandbox, listener: _Listener, record: Record) -> None:
    # The listener itself works: a connection from the host is counted.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
        pass
    await asyncio.sleep(0.3)
    assert listener.accepted == 1
    result = await _run(sandbox, "tcp_loopback.sh", str(listener.port), _host_ip())
    await asyncio.sleep(0.3)
    assert listener.accepted == 1, "a sandboxed script reached a listener on the host"
    assert "nc 127.0.0.1 rc=1" in result.output and "Connection refused" in result.output  # its own empty lo
    assert "nc 10.0.2.2 rc=1" in result.output and "Network is unreachable" in result.output
    assert result.output.rstrip().splitlines()[-1] == "lo"  # the only interface
    assert "network=none" in result.enforced
    await _assert_healthy(sandbox)
    record("TCP to host 127.0.0.1 / host IP", "refused: no route out; listener saw 0 connections",
           "network=none (own netns, only lo)")


async def test_dns_does_not_resolve(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "dns.sh")
    assert "nslookup rc=1" in result.output and "nslookup8 rc=1" in result.output
    assert "Address" not in result.output.split("nslookup rc=")[0].split("example.com")[-1]
    record("resolve example.com (system resolver, 8.8.8.8)", "refused: no server reachable", "network=none")


async def test_network_default_is_an_explicit_opt_in(sandbox: Sandbox, record: Record) -> None:
    """`network="default"` asks for the rootless user-mode network; anything else is rejected, none is default."""
    with pytest.raises(ValueError, match="network must be one of none, default"):
        await _run(sandbox, "hello.sh", network="host")
    try:
        result = await _run(sandbox, "tcp_loopback.sh", "9", "127.0.0.1", network="default")
    except Exception as exc:  # the host may lack a usable /dev/net/tun for slirp4netns: the error must say so
        assert "/dev/net/tun" in str(exc) or "slirp4netns" in str(exc), exc
        record("network default (opt-in)", "refused by the host: slirp4netns cannot open /dev/net/tun",
               "chmod 666 /dev/net/tun to allow it")
        return
    assert "network=slirp4netns" in result.enforced
    assert "nc 127.0.0.1 rc=1" in result.output and "nc 10.0.2.2 rc=1" in result.output
    record("network default (opt-in): host loopback", "refused", "slirp4netns without host loopback")


# --- file system ----------------------------------------------------------------------------------------


async def test_write_to_root_is_refused(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "write_root.sh")
    assert "write rc=1" in result.output and "mkdir rc=1" in result.output
    assert "Read-only file system" in result.output
    record("write to /", "refused: Read-only file system", "read_only_root")


async def test_write_to_scripts_is_refused(sandbox: Sandbox, attack_dir: Path, record: Record) -> None:
    before = sorted(os.listdir(attack_dir))
    result = await _run(sandbox, "write_scripts.sh")
    assert "write rc=1" in result.output and "rm rc=1" in result.output
    assert "Read-only file system" in result.output
    assert sorted(os.listdir(attack_dir)) == before
    record("write/delete in /scripts", "refused: Read-only file system", "scripts:ro bind mount")


async def test_executing_from_tmp_is_refused(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "exec_tmp.sh")
    assert "copied" in result.output  # /tmp is writable ...
    assert "EXECUTED" not in result.output  # ... but nothing written there runs
    assert "exec rc=126" in result.output and "script rc=126" in result.output
    assert "Permission denied" in result.output
    record("execute a binary / script from /tmp", "refused: Permission denied (rc 126)", "tmpfs /tmp noexec")


@pytest.fixture
def herald_data() -> Iterator[Path]:
    """A fake Herald data folder with a secret: owned by root, the secret mode 600."""
    data = Path(tempfile.mkdtemp(prefix="herald-data-", dir="/tmp"))
    data.chmod(0o755)  # even world-enterable: it is absence, not permissions, that protects it
    secret = data / "secrets.toml"
    secret.write_text('chat_token = "s3cret-token-do-not-leak"\n')
    secret.chmod(0o600)
    os.chown(secret, 0, 0)
    try:
        yield data
    finally:
        secret.unlink()
        data.rmdir()


async def test_host_secrets_are_not_even_mounted(sandbox: Sandbox, herald_data: Path, record: Record) -> None:
    result = await _run(sandbox, "read_secrets.sh", str(herald_data))
    assert "s3cret" not in result.output and "root:" not in result.output
    assert "shadow rc=1" in result.output and "proc1 rc=1" in result.output
    assert "ls rc=1" in result.output and "secret rc=1" in result.output
    assert result.output.count("No such file or directory") >= 4  # not "Permission denied": not there at all
    assert "0\nmounted rc=1" in result.output and "0\nfound" in result.output
    record("read /etc/shadow, Herald's data folder and secret", "refused: No such file (not mounted)",
           "only the image, /tmp and /scripts exist inside")


# --- privileges -----------------------------------------------------------------------------------------


async def test_no_capabilities_and_setuid_is_useless(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "privileges.sh")
    out = result.output
    for field in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert f"{field}:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert int(out.splitlines()[5]) != 0  # not container root
    assert "suid copy made" in out and "suid exec rc=126" in out  # made, but it cannot run (noexec, nosuid)
    assert "chown rc=1" in out and "Operation not permitted" in out
    # A nested user namespace is allowed by the kernel, but its "root" gains nothing over our mounts:
    assert "remount rc=1" in out and "nested write rc=1" in out and "proc rc=1" in out
    assert any(p.startswith("user=") for p in result.enforced)
    record("gain capabilities / setuid / nested userns", "refused: CapEff 0, suid exec rc 126, remount denied",
           "cap_drop=ALL, no_new_privileges, nosuid+noexec /tmp, per-run uid")


# --- resources ------------------------------------------------------------------------------------------


async def test_fork_bomb_is_bounded_and_killed_at_the_timeout(
    sandbox: Sandbox, to_host_uid: Callable[[int], int], record: Record
) -> None:
    lines: list[str] = []
    started = time.monotonic()
    bomb = asyncio.create_task(
        sandbox.run("fork_bomb.sh", [], timeout_s=6, task_id="escape-forkbomb", on_output=lines.append)
    )
    while not lines and not bomb.done():
        await asyncio.sleep(0.05)
    uid = to_host_uid(int(lines[0]))
    peak = 0
    healthy: SandboxResult | None = None
    while not bomb.done():
        peak = max(peak, _tasks_of(uid))
        if healthy is None and time.monotonic() - started > 2:
            healthy = await _run(sandbox, "hello.sh")  # another run, during the bomb
        await asyncio.sleep(0.05)
    result = await bomb
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code is None
    assert elapsed < 6 + 4
    # It hit its limit ("can't fork"); the host never saw more tasks of its uid than the limit. (The bomb can
    # burn out between two samples, since busybox sh exits on a failed fork, so the peak seen may be low.)
    assert "can't fork: Resource temporarily unavailable" in result.output
    assert 1 <= peak <= SandboxConfig().pids, peak
    assert _tasks_of(uid) == 0
    assert healthy is not None and healthy.exit_code == 0, healthy  # the others' runs were not starved
    record("fork bomb", f"bounded ('can't fork', peak seen {peak} tasks), killed at timeout; parallel run ok",
           _mechanism(result, "pids="))


async def test_memory_bomb_is_refused(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "memory_bomb.sh")
    assert "SURVIVED" not in result.output
    mechanism = _mechanism(result, "memory=")
    budget = memory_budget(256 * 1024 * 1024, SandboxConfig())
    if "RLIMIT_DATA" in mechanism:
        # No memory cgroup: each process gets its share of the run's 256m (engine/sandbox/policy.py memory_budget).
        assert f"data limit kB: {budget.data // 1024}" in result.output
        assert "out of memory" in result.output and result.exit_code not in (None, 0)
        outcome = f"refused: allocation failed at the process share {budget.data >> 20}m (sh: out of memory)"
    else:  # a memory cgroup: the kernel OOM-kills the run
        assert result.exit_code == 137
        outcome = "killed by the OOM killer (rc 137)"
    # The per-run option moves the limit.
    bigger = await _run(sandbox, "memory_bomb.sh", memory="512m")
    assert "SURVIVED" not in bigger.output
    if "RLIMIT_DATA" in mechanism:  # more memory: the same share each, more processes
        bigger_budget = memory_budget(512 * 1024 * 1024, SandboxConfig())
        assert f"at most {bigger_budget.processes} processes" in _mechanism(bigger, "memory=")
    with pytest.raises(ValueError, match="below the minimum"):
        await _run(sandbox, "hello.sh", memory="16m")
    await _assert_healthy(sandbox)
    record("memory bomb (doubling a string)", outcome, mechanism)


async def test_filling_the_disk_is_capped(sandbox: Sandbox, record: Record) -> None:
    result = await _run(sandbox, "fill_disk.sh")
    out = result.output
    assert "big rc=153" in out  # 128 + SIGXFSZ: the file size limit killed the writer
    assert f"\n{16 * 1024 * 1024}\n" in out  # ... at exactly 16 MiB
    assert "f1 rc=0" in out and "f2 rc=1" in out and "f3 rc=1" in out  # the tmpfs is full after 16 MiB
    assert "16384     16384         0 100% /tmp" in out
    record("fill the disk", "capped: one file killed at 16 MiB (SIGXFSZ), /tmp full at 16 MiB",
           "RLIMIT_FSIZE=16m, tmpfs size=16m")


async def test_running_past_the_timeout_is_killed(sandbox: Sandbox, podman_url: str, record: Record) -> None:
    started = time.monotonic()
    result = await sandbox.run("past_timeout.sh", [], timeout_s=2, task_id="escape-timeout")
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code is None
    assert result.output == "started\n"
    # Killed at the timeout, not earlier; the upper bounds are loose because a loaded machine starts containers
    # slowly (the script loops forever, so a missing kill fails this anyway).
    assert 1.9 < result.duration_s < 15 and elapsed < 20
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        assert client.containers.list(all=True, filters={"label": "herald.task=escape-timeout"}) == []
    record("run past the timeout (2 s)", f"killed after {result.duration_s:.1f} s, timed_out",
           "SIGKILL to the container at the timeout; container removed")


def _peak_rss_reset() -> int:
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS
        fh.write("5")
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(field + ":")).split()[1])


async def test_printing_100_mb_is_capped_and_counted(sandbox: Sandbox, record: Record) -> None:
    lines: list[str] = []
    rss_before = _peak_rss_reset()
    result = await sandbox.run("print_100mb.sh", [], timeout_s=60, task_id="escape-print",
                               on_output=lines.append)
    peak_growth_mb = (_status_kb("VmHWM") - rss_before) / 1024
    assert result.exit_code == 0
    assert result.output_bytes == 100_000_000 + len("\nEND\n")  # every byte counted ...
    body, note = result.output.rsplit("\n", 1)
    assert len(body.encode()) == 1_000_000  # ... only the first output_limit_bytes kept
    assert note == f"[herald: output truncated at 1000000 bytes of {100_000_005}]"
    assert lines[-1] == note and sum(len(line) for line in lines[:-1]) == 1_000_000
    assert peak_growth_mb < 64, f"the engine's memory grew by {peak_growth_mb:.0f} MB"
    await _assert_healthy(sandbox)
    record("print 100 MB", f"capped at 1 MB, {result.output_bytes} bytes counted, engine +{peak_growth_mb:.0f} MB",
           "attach stream read in a thread, head kept, rest counted; conmon log size-capped")


async def test_a_child_left_running_dies_with_the_run(
    sandbox: Sandbox, podman_url: str, to_host_uid: Callable[[int], int], record: Record
) -> None:
    result = await sandbox.run("leave_child.sh", [], timeout_s=20, task_id="escape-child")
    assert result.exit_code == 0 and "children left running" in result.output
    uid = to_host_uid(int(result.output.splitlines()[0]))
    assert _tasks_of(uid) == 0, "a process of the run outlived it"
    with PodmanClient(base_url=podman_url, timeout=30) as client:
        assert client.containers.list(all=True, filters={"label": "herald.task=escape-child"}) == []
    left = _sandboxer_commands()
    # The service and its helpers; "podman pause" holds the rootless user namespace between service starts.
    assert left <= {"podman", "podman pause", "conmon", "catatonit", "slirp4netns"}, left
    assert "sleep" not in left
    record("leave a child running after exit", f"killed: no task of uid {uid}, ps -u sandboxer = {sorted(left)}",
           "PID namespace: its init exited, the kernel killed the rest; container removed")


def test_pwd_has_the_sandbox_user() -> None:
    """The suite's premise: the unprivileged user exists (`bash .ci/setup-sandbox`)."""
    assert pwd.getpwnam("sandboxer").pw_uid != 0
