"""The host names of `network allow`: resolved on the host when a run is created, and pinned for the whole run.

The script gets no DNS (unless its resolver is itself an entry): a lookup of its own would need DNS to be let out,
which is itself a way out. So each name is resolved here, once, to its IPv4 addresses (A records, the host's own
resolver, bounded by `RESOLVE_TIMEOUT_S`); the run's filter allows exactly those addresses with the entry's port, and
the container's /etc/hosts maps the name to them (Podman's `hostadd`, read back by `verify_applied`), so the script's
lookup of that name is answered without DNS. If the name's addresses change during the run, the run keeps the ones
it started with.

Fail closed: a name that does not resolve (in time), resolves to no IPv4 address, or to one a script may not be let
out to (loopback, 0.0.0.0, multicast), refuses the run before its container exists, naming the entry. Never a run
with a wider network.

Blocking; the runner calls `pin` on its worker threads.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable

from dsl.network import allowed_address, is_address
from engine.core.errors import SandboxError
from engine.sandbox.policy import RunLimits

RESOLVE_TIMEOUT_S = 5.0  # for all of a run's names together; a resolver that does not answer refuses the run

Answer = list[str] | OSError  # the addresses found, or why none were


def pin(limits: RunLimits, timeout_s: float = RESOLVE_TIMEOUT_S) -> RunLimits:
    """`limits` with each host name of its allow-list replaced by the addresses it resolves to now, and those
    (name, address) pairs in `hosts`; SandboxError naming the first entry whose name gives no usable address."""
    names = [host for host, _ in limits.allow if not is_address(host)]
    if not names:
        return limits
    answers = lookup(names, timeout_s)
    allow: list[tuple[str, int]] = []
    hosts: list[tuple[str, str]] = []
    for host, port in limits.allow:
        if is_address(host):
            allow.append((host, port))
            continue
        addresses = _usable(f"{host}:{port}", answers.get(host), timeout_s)
        allow += [(address, port) for address in addresses]
        hosts += [(host, address) for address in addresses]
    return dataclasses.replace(limits, allow=tuple(dict.fromkeys(allow)), hosts=tuple(dict.fromkeys(hosts)))


def lookup(names: Iterable[str], timeout_s: float) -> dict[str, Answer]:
    """Each name's IPv4 addresses (in the resolver's order, no repeats), looked up at once; a name missing from the
    answer had none within `timeout_s`.

    getaddrinfo cannot be cancelled: each lookup runs on a daemon thread of its own, which is left to finish on its
    own after the deadline (the run is refused by then), instead of holding the run or one of the sandbox's threads.
    """
    answers: dict[str, Answer] = {}

    def resolve(name: str) -> None:
        try:
            found = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
            answers[name] = list(dict.fromkeys(str(info[4][0]) for info in found))
        except OSError as exc:  # socket.gaierror: no such name, no IPv4 address, no resolver
            answers[name] = exc

    threads = [threading.Thread(target=resolve, args=(name,), name="herald-resolve", daemon=True)
               for name in dict.fromkeys(names)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(answers)


def _usable(entry: str, answer: Answer | None, timeout_s: float) -> list[str]:
    where = f"network allow '{entry}'"
    if answer is None:
        raise SandboxError(f"{where}: the name does not resolve (no answer from the host's resolver within "
                           f"{timeout_s:g} s); refusing to run")
    if isinstance(answer, OSError):
        reason = answer.strerror or str(answer)
        raise SandboxError(f"{where}: the name does not resolve ({reason}); refusing to run")
    if not answer:
        raise SandboxError(f"{where}: the name resolves to no IPv4 address; refusing to run")
    for address in answer:
        if not allowed_address(ipaddress.IPv4Address(address)):
            raise SandboxError(f"{where}: the name resolves to {address}, which is not an address a script can "
                               "connect out to (loopback is the script's own, 0.0.0.0 and multicast are not "
                               "hosts); refusing to run")
    return answer
