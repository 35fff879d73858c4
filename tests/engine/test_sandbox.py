"""The sandbox against the real rootless Podman of user `sandboxer` (run `bash .ci/setup-sandbox` first).

Every test runs real scripts in real containers and asserts on what a user would see: exit codes,
output, and that each protection holds from inside the container.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient

from engine.core.errors import SandboxUnavailable
from engine.sandbox.podman_service import socket_url_for
from engine.sandbox.policy import memory_budget, parse_size
from engine.sandbox.runner import Sandbox, SandboxConfig, SandboxResult
from tests.engine.conftest import SANDBOX_USER

SCRIPTS = {
    "exit.sh": 'echo "exiting with $1"\nexit "$1"\n',
    "args.sh": 'echo "argc=$#"\nfor a in "$@"; do printf "ARG[%s]\\n" "$a"; done\n',
    "lines.sh": "echo one\necho two\nsleep 1\necho three\n",
    "net.sh": "ls /sys/class/net\nnc -w 2 1.1.1.1 53 </dev/null 2>&1\necho \"nc rc=$?\"\n",
    "rootfs.sh": "touch /written 2>&1\necho \"touch rc=$?\"\n",
    "tmp.sh": (
        "printf '#!/bin/sh\\necho EXECUTED\\n' > /tmp/x && chmod 755 /tmp/x && echo WROTE\n"
        "/tmp/x 2>&1\necho \"exec rc=$?\"\n"
    ),
    "caps.sh": "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status\n",
    "env.sh": 'echo "task=$HERALD_TASK_ID lang=$LANG"\necho "nofile=$(ulimit -n) nproc=$(ulimit -u)"\n',
    "sleep.sh": "echo sleeping\nsleep 30\necho woke\n",
    "slow.sh": "sleep 3\necho done\n",
    "big.sh": "i=0\nwhile [ $i -lt 500 ]; do echo 0123456789; i=$((i+1)); done\n",
    ".hidden": "echo hidden\n",
}


@pytest.fixture(scope="module")
def scripts_dir() -> Iterator[Path]:
    """Test scripts in a folder under /tmp that the sandbox user can read (pytest's tmp_path is 700)."""
    folder = Path(tempfile.mkdtemp(prefix="herald-sandbox-test-", dir="/tmp"))
    folder.chmod(0o755)
    for name, body in SCRIPTS.items():
        (folder / name).write_text(body)
        (folder / name).chmod(0o644)
    (folder / "sub").mkdir(mode=0o755)
    (folder / "sub" / "x.sh").write_text("echo sub\n")
    (folder / "sub" / "x.sh").chmod(0o644)
    (folder / "link-in.sh").symlink_to(folder / "exit.sh")  # absolute target, inside the folder
    (folder / "link-out.sh").symlink_to("/etc/passwd")
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _config(podman_url: str, **overrides: Any) -> SandboxConfig:
    return SandboxConfig(podman_url=podman_url, autostart=False, **overrides)


@pytest.fixture
async def sandbox(podman_url: str, scripts_dir: Path) -> AsyncIterator[Sandbox]:
    sb = Sandbox(config=_config(podman_url), scripts_dir=scripts_dir)
    await sb.start()
    assert sb.problem is None, sb.problem
    try:
        yield sb
    finally:
        await sb.close()


async def _containers_of(podman_url: str, task_id: str) -> list[Any]:
    def list_them() -> list[Any]:
        with PodmanClient(base_url=podman_url, timeout=30) as client:
            return client.containers.list(all=True, filters={"label": f"herald.task={task_id}"})

    return await asyncio.to_thread(list_them)


async def _run(sb: Sandbox, script: str, *args: str, timeout_s: float = 20) -> SandboxResult:
    return await sb.run(script, args, timeout_s=timeout_s, task_id=f"test-{uuid.uuid4().hex[:8]}")


async def test_exit_code_is_passed_through(sandbox: Sandbox) -> None:
    assert (await _run(sandbox, "exit.sh", "7")).exit_code == 7
    ok = await _run(sandbox, "exit.sh", "0")
    assert ok.exit_code == 0 and not ok.timed_out
    assert ok.output == "exiting with 0\n"


async def test_output_is_captured_and_streamed_line_by_line(sandbox: Sandbox) -> None:
    seen: list[tuple[str, float, str]] = []

    def on_output(line: str) -> None:
        seen.append((line, time.monotonic(), threading.current_thread().name))

    result = await sandbox.run("lines.sh", [], timeout_s=20, task_id="test-stream", on_output=on_output)
    finished = time.monotonic()

    assert result.exit_code == 0
    assert result.output == "one\ntwo\nthree\n"
    assert [line for line, _, _ in seen] == ["one", "two", "three"]
    # "one" came live, about a second before the script ended, not replayed at the end.
    assert finished - seen[0][1] > 0.5
    # The callback runs on the event loop's thread, not in a worker.
    assert {thread for _, _, thread in seen} == {threading.current_thread().name}


@pytest.mark.parametrize(
    "arg",
    ["; rm -rf /", "$(id)", "`id`", "with  two spaces", "*", "", "a\"quote'mix", "--help"],
)
async def test_args_arrive_as_literal_single_arguments(sandbox: Sandbox, arg: str) -> None:
    result = await _run(sandbox, "args.sh", arg, "second")
    assert result.output == f"argc=2\nARG[{arg}]\nARG[second]\n"


async def test_no_network_only_loopback(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "net.sh")
    lines = result.output.splitlines()
    assert lines[0] == "lo" and not any(line.startswith(("eth", "tap", "en")) for line in lines)
    assert "Network is unreachable" in result.output
    assert "nc rc=1" in result.output


async def test_root_filesystem_is_read_only(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "rootfs.sh")
    assert "Read-only file system" in result.output
    assert "touch rc=1" in result.output


async def test_tmp_is_writable_but_noexec(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "tmp.sh")
    assert "WROTE" in result.output
    assert "EXECUTED" not in result.output
    assert "Permission denied" in result.output


async def test_no_capabilities_and_no_new_privileges(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "caps.sh")
    assert "CapEff:\t0000000000000000" in result.output
    assert "NoNewPrivs:\t1" in result.output
    for protection in ("network=none", "cap_drop=ALL", "read_only_root", "no_new_privileges",
                       "scripts:ro"):
        assert protection in result.enforced
    assert any(p.startswith("tmpfs:/tmp noexec,nosuid,nodev") for p in result.enforced)
    pids = SandboxConfig().pids
    assert any(p.startswith(f"rlimits nproc={pids},nofile=256,fsize=16777216,cpu=") for p in result.enforced)


async def test_env_and_rlimits_inside(sandbox: Sandbox) -> None:
    result = await sandbox.run("env.sh", [], timeout_s=20, task_id="task-42")
    assert "task=task-42 lang=C" in result.output
    pids = SandboxConfig().pids
    if any(e.startswith("memory=") and "no cgroup" in e for e in result.enforced):
        # No memory cgroup: the script runs with the memory budget's process count, lowered from pids at start.
        pids = memory_budget(parse_size(SandboxConfig().memory), SandboxConfig()).processes
    assert f"nofile=256 nproc={pids}" in result.output


async def test_timeout_kills_the_script(sandbox: Sandbox, podman_url: str) -> None:
    lines: list[str] = []
    started = time.monotonic()
    result = await sandbox.run("sleep.sh", [], timeout_s=1.5, task_id="test-timeout", on_output=lines.append)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert result.exit_code is None
    assert 1.4 < result.duration_s < 5 and elapsed < 6
    assert result.output == "sleeping\n" and lines == ["sleeping"]
    assert await _containers_of(podman_url, "test-timeout") == []


async def test_cancelled_run_still_removes_its_container(sandbox: Sandbox, podman_url: str) -> None:
    run = asyncio.create_task(sandbox.run("sleep.sh", [], timeout_s=30, task_id="test-cancel"))
    await asyncio.sleep(1.0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await _containers_of(podman_url, "test-cancel") == []


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "sub/x.sh", "/etc/passwd", ".hidden", "..", "missing.sh", "sub", "link-out.sh", ""],
)
async def test_bad_script_names_are_rejected(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(ValueError):
        await _run(sandbox, name)


async def test_symlink_inside_the_folder_is_followed(sandbox: Sandbox) -> None:
    assert (await _run(sandbox, "link-in.sh", "3")).exit_code == 3


async def test_a_string_as_args_is_rejected(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        await sandbox.run("args.sh", "oops", timeout_s=5, task_id="t")


async def test_containers_are_removed_after_each_run(sandbox: Sandbox, podman_url: str) -> None:
    for code in ("0", "5"):
        await sandbox.run("exit.sh", [code], timeout_s=20, task_id="test-cleanup")
    assert await _containers_of(podman_url, "test-cleanup") == []


async def test_output_is_capped(podman_url: str, scripts_dir: Path) -> None:
    sb = Sandbox(config=_config(podman_url, output_limit_bytes=1000), scripts_dir=scripts_dir)
    lines: list[str] = []
    try:
        result = await sb.run("big.sh", [], timeout_s=20, task_id="test-cap", on_output=lines.append)
    finally:
        await sb.close()
    body, note = result.output.rsplit("\n[herald:", 1)
    assert len(body.encode()) == 1000 and "truncated at 1000 bytes of 5500" in note
    assert result.output_bytes == 5500  # 500 lines of 11 bytes: the rest was counted, not kept
    assert lines[:90] == ["0123456789"] * 90 and lines[-1].startswith("[herald: output truncated")
    assert sum(len(line) + 1 for line in lines[:-1]) <= 1001


async def test_missing_image_is_unavailable_with_the_fix(podman_url: str, scripts_dir: Path) -> None:
    sb = Sandbox(config=_config(podman_url, image="localhost/herald-no-such-image:latest"),
                 scripts_dir=scripts_dir)
    try:
        await sb.start()  # must not raise: herald still starts
        assert sb.problem is not None and "herald-no-such-image" in sb.problem
        with pytest.raises(SandboxUnavailable, match=r"missing.*setup-sandbox"):
            await _run(sb, "exit.sh", "0")
    finally:
        await sb.close()


async def test_missing_user_is_unavailable_with_the_fix(scripts_dir: Path) -> None:
    sb = Sandbox(config=SandboxConfig(user="herald-no-such-user"), scripts_dir=scripts_dir)
    try:
        await sb.start()
        assert sb.problem is not None
        with pytest.raises(SandboxUnavailable, match=r"does not exist.*setup-sandbox"):
            await _run(sb, "exit.sh", "0")
    finally:
        await sb.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder the sandbox user cannot enter")
async def test_unreadable_scripts_folder_is_explained(podman_url: str) -> None:
    private = Path(tempfile.mkdtemp(prefix="herald-private-", dir="/tmp"))  # mode 700, owned by root
    try:
        (private / "scripts").mkdir(mode=0o755)
        (private / "scripts" / "ok.sh").write_text("echo ok\n")
        sb = Sandbox(config=_config(podman_url), scripts_dir=private / "scripts")
        try:
            await sb.start()
            assert sb.problem is not None and str(private) in sb.problem
            with pytest.raises(SandboxUnavailable, match=r"cannot enter .*herald-private.*chmod 755"):
                await _run(sb, "ok.sh")
        finally:
            await sb.close()
    finally:
        shutil.rmtree(private)


def _service_pids(url: str) -> list[int]:
    """Processes running `podman ... system service ... URL` (the service of that one socket)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"service" in argv and url.encode() in argv:
                pids.append(int(entry))
    return pids


async def _until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_an_idle_service_exits_and_the_next_run_starts_it_again(scripts_dir: Path) -> None:
    # A socket of our own, so the service is one this sandbox starts (not the session's shared one, which never idles).
    default = socket_url_for(SANDBOX_USER)
    url = f"{default.rsplit('/', 1)[0]}/herald-idle-test-{uuid.uuid4().hex[:8]}.sock"
    sb = Sandbox(config=SandboxConfig(user=SANDBOX_USER, podman_url=url, autostart=True, service_idle_s=1),
                 scripts_dir=scripts_dir)
    try:
        await sb.start()  # the start-up check starts the service...
        assert sb.problem is None, sb.problem
        first = _service_pids(url)
        assert first
        # ...and, unused, it exits by itself after its idle timeout (and is reaped: no zombie left behind).
        assert await _until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in first), 20), \
            "the idle service did not exit"

        # The next run starts it again, transparently.
        ok = await _run(sb, "exit.sh", "0")
        assert ok.exit_code == 0 and ok.output == "exiting with 0\n"
        again = _service_pids(url)
        assert again and set(again).isdisjoint(first)
        # A run longer than the idle timeout keeps it up (the open request counts as activity).
        slow = await _run(sb, "slow.sh")
        assert slow.exit_code == 0 and slow.output == "done\n"
        assert _service_pids(url) == again

        # Gone again after idling, then close() copes with a service that already exited.
        assert await _until(lambda: not _service_pids(url), 20), "the restarted service did not exit"
        await sb.close()

        # A service restarted this way is still known as ours: close() stops it.
        sb = Sandbox(config=SandboxConfig(user=SANDBOX_USER, podman_url=url, autostart=True, service_idle_s=1),
                     scripts_dir=scripts_dir)
        await sb.start()
        assert await _until(lambda: not _service_pids(url), 20), "the idle service did not exit"
        assert (await _run(sb, "exit.sh", "3")).exit_code == 3
        assert _service_pids(url)
        await sb.close()
        assert not _service_pids(url)
    finally:
        await sb.close()
        for pid in _service_pids(url):  # only if a failure above left it running
            os.kill(pid, 15)


_LAZY_PROBE = """
import asyncio, json, sys
from pathlib import Path
from engine.sandbox.runner import Sandbox, SandboxConfig

def loaded():
    return sorted({m.split('.')[0] for m in sys.modules} & {'podman', 'requests'})

async def main():
    sandbox = Sandbox(config=SandboxConfig(podman_url=sys.argv[1], autostart=False), scripts_dir=Path(sys.argv[2]),
                      owner='lazy-probe-' + sys.argv[3])
    await sandbox.start()
    await sandbox.remove_leftovers()
    at_start = loaded()
    result = await sandbox.run('exit.sh', ['0'], timeout_s=20, task_id='lazy')
    await sandbox.close()
    print(json.dumps({'problem': sandbox.problem, 'at_start': at_start, 'after_run': loaded(),
                      'exit_code': result.exit_code}))

asyncio.run(main())
"""


def test_podman_py_is_loaded_with_the_first_run_not_at_start(podman_url: str, scripts_dir: Path) -> None:
    """The start-up check and the leftover listing speak Podman's REST API with the standard library; podman-py and
    requests (~9 MiB resident) come with the first run (issue 13's memory budget for an idle engine)."""
    probe = subprocess.run([sys.executable, "-c", _LAZY_PROBE, podman_url, str(scripts_dir), uuid.uuid4().hex[:8]],
                           cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen == {"problem": None, "at_start": [], "after_run": ["podman", "requests"], "exit_code": 0}, seen


async def test_a_podman_url_of_a_kind_herald_cannot_reach_is_named_at_start(scripts_dir: Path) -> None:
    sandbox = Sandbox(config=_config("ssh://core@host/run/podman/podman.sock"), scripts_dir=scripts_dir)
    await sandbox.start()
    try:
        assert sandbox.problem == ("podman_url 'ssh://core@host/run/podman/podman.sock': use "
                                   "unix:///path/to/podman.sock or tcp://host:port")
        with pytest.raises(SandboxUnavailable, match="use unix:///path/to/podman.sock"):
            await sandbox.run("exit.sh", ["0"], timeout_s=5, task_id="t-url")
    finally:
        await sandbox.close()
