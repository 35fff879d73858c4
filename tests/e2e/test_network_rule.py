"""A rule's `network allow` reaches the sandbox: `/probe` from chat runs a script that may connect to one service of
the host and not to another, and a host name that does not resolve fails the task with the entry named (issue 18
item 11), through the whole path (rule, task record, sandbox)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.server.app import Engine
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, chat_url


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))  # no packet is sent
        return str(probe.getsockname()[0])


def _serve(sock: socket.socket) -> None:
    """Accept and close at once, until the socket is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.close()


@pytest.fixture
def two_services() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two TCP services of the host on 0.0.0.0."""
    a, b = socket.create_server(("0.0.0.0", 0)), socket.create_server(("0.0.0.0", 0))
    threads = [threading.Thread(target=_serve, args=(s,), daemon=True) for s in (a, b)]
    for thread in threads:
        thread.start()
    try:
        yield a, b
    finally:
        for s in (a, b):
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in threads:
            thread.join(5)


@pytest.fixture
def probe_rule(rules_dir: Path, two_services: tuple[socket.socket, socket.socket]) -> tuple[str, int, int]:
    ip = _host_ip()
    allowed, other = (s.getsockname()[1] for s in two_services)
    script = rules_dir / "scripts" / "probe.sh"
    script.write_text(f"for p in {allowed} {other}; do nc -w 2 {ip} $p </dev/null; echo \"port $p rc=$?\"; done\n")
    script.chmod(0o644)
    (rules_dir / "probe.rules").write_text(
        f'on command probe require role admin run probe.sh sandboxed timeout 30s network allow "{ip}:{allowed}"\n')
    return ip, allowed, other


async def test_a_rules_allow_list_is_what_the_script_can_reach(probe_rule: tuple[str, int, int],
                                                               engine: Engine) -> None:
    ip, allowed, other = probe_rule
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/probe")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=120)
    assert f"port {allowed} rc=0" in result["output"] and f"port {other} rc=1" in result["output"], result
    task = await engine.tasks.get(result["task"])
    assert task is not None
    assert (task.params.network, task.params.network_allow) == ("allow", [f"{ip}:{allowed}"])
    assert f"netfilter: only {ip}:{allowed} (tcp, udp); IPv6 none" in task.enforced


@pytest.fixture
def unresolvable_rule(rules_dir: Path) -> None:
    script = rules_dir / "scripts" / "fetch.sh"
    script.write_text("echo started\n")
    script.chmod(0o644)
    (rules_dir / "fetch.rules").write_text(
        'on command fetch require role admin run fetch.sh sandboxed timeout 30s network allow "nothing.invalid:443"\n')


async def test_a_host_name_that_does_not_resolve_fails_the_task_with_the_entry_named(unresolvable_rule: None,
                                                                                      engine: Engine) -> None:
    # The rule compiles (the name is well formed; nothing is looked up then); the run is refused when it is created.
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/fetch")
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=120)
    assert result["ok"] is False and result["text"].startswith(
        "fetch.sh failed: network allow 'nothing.invalid:443': the name does not resolve ("), result
    task = await engine.tasks.get(result["task"])
    assert task is not None and task.status == "failed"
    assert task.container is None and task.output == ""  # no container was made: the script never started
