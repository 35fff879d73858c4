"""The packet filter of a run with a network, set in the container's own network namespace before the script starts.

slirp4netns (rootless) connects out from the host on the script's behalf, so a service the host listens on at any
of its addresses (0.0.0.0, the LAN address) answered a script with `network default`; `allow_host_loopback=false`
only hides 127.0.0.1. So every run with a network gets netfilter rules in its own namespace:

- `network default`: everything out, except the host's own addresses (read from /proc/net/fib_trie when the run
  is created), slirp4netns' gateway 10.0.2.2 (the host) and link-local 169.254.0.0/16 (cloud metadata services);
- `network allow "A:P", ...`: only those addresses and ports (TCP and UDP), even when one is the host's (a host
  name's addresses are resolved before: engine/sandbox/resolve.py);
- IPv6: nothing but loopback, in both.

How: the runner creates the container, `init`s it (Podman sets up the namespace and slirp4netns, runc waits before
the script), and Herald (as root, or as the sandbox user through its rootless user namespace) enters that namespace
with `nsenter` and loads the rules with `iptables-restore`; then reads them back with `iptables-save` and compares,
rule by rule. Only then does the container start. The script has no capabilities (verified separately), so it cannot
change them. Anything that fails here fails the run: nothing runs unfiltered.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import SandboxError, SandboxUnavailable

SLIRP_GATEWAY = "10.0.2.2"  # slirp4netns' address for the host itself
LINK_LOCAL = "169.254.0.0/16"
_TOOLS = ("nsenter", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save")
_SEARCH = "/usr/sbin:/sbin:/usr/bin:/bin"
_TIMEOUT_S = 10.0
_REJECT = "-j REJECT --reject-with icmp-port-unreachable"
_REJECT6 = "-j REJECT --reject-with icmp6-port-unreachable"
_RESET = "-p tcp -j REJECT --reject-with tcp-reset"


@dataclass(frozen=True)
class Ruleset:
    """The filter table of one family, written the way `iptables-save` prints it back."""

    policy: str  # of OUTPUT
    rules: tuple[str, ...]  # -A lines, in order

    def restore_input(self) -> str:
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", f":OUTPUT {self.policy} [0:0]",
                 *self.rules, "COMMIT", ""]
        return "\n".join(lines)


def host_addresses(fib_trie: Path = Path("/proc/net/fib_trie")) -> tuple[str, ...]:
    """Every IPv4 address of this host (local and broadcast, loopback aside), from the kernel's routing table."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.read_text().splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32") and ("LOCAL" in text or "BROADCAST" in text) and last:
            if not ipaddress.IPv4Address(last).is_loopback:
                found.add(last)
    return tuple(sorted(found, key=ipaddress.IPv4Address))


def rulesets(network: str, allow: Sequence[tuple[str, int]], blocked: Sequence[str]) -> tuple[Ruleset, Ruleset]:
    """The IPv4 and IPv6 rules of a run with `network` ("default" or "allow")."""
    rules = ["-A OUTPUT -o lo -j ACCEPT"]
    if network == "allow":
        for address, port in allow:
            # Only addresses: iptables would resolve a name itself, with the host's DNS, to whatever it says then.
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise SandboxError(f"network allow '{address}:{port}' reached the filter unresolved; "
                                   "refusing to run") from None
            for proto in ("tcp", "udp"):
                rules.append(f"-A OUTPUT -d {address}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT")
        rules += [f"-A OUTPUT {_RESET}", f"-A OUTPUT {_REJECT}"]
    elif network == "default":
        for address in (*blocked, SLIRP_GATEWAY):
            rules.append(f"-A OUTPUT -d {address}/32 {_REJECT}")
        rules += [f"-A OUTPUT -d {LINK_LOCAL} {_REJECT}", "-A OUTPUT -j ACCEPT"]
    else:
        raise ValueError(f"no filter for network {network!r}")
    v6 = ("-A OUTPUT -o lo -j ACCEPT", f"-A OUTPUT {_RESET}", f"-A OUTPUT {_REJECT6}")
    return Ruleset("DROP", tuple(dict.fromkeys(rules))), Ruleset("DROP", v6)


def describe(network: str, allow: Sequence[tuple[str, int]], blocked: Sequence[str]) -> str:
    """One line for `enforced`: what the run's filter lets through."""
    if network == "allow":
        return "netfilter: only " + ", ".join(f"{a}:{p}" for a, p in allow) + " (tcp, udp); IPv6 none"
    return (f"netfilter: host addresses blocked ({', '.join(blocked) or 'none found'}, {SLIRP_GATEWAY}, "
            f"{LINK_LOCAL}); IPv6 none")


def tools() -> dict[str, str]:
    """Paths of the programs the filter needs; SandboxUnavailable naming what is missing."""
    found = {name: shutil.which(name, path=_SEARCH) for name in _TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SandboxUnavailable(f"runs with a network need {', '.join(missing)} on the host to filter their "
                                 "traffic: apt-get install iptables util-linux")
    return {name: str(path) for name, path in found.items()}


def can_enter(podman_uid: int) -> str | None:
    """Why this process cannot set the filter of a container of the Podman run by host uid `podman_uid`, or None.

    Root can enter any network namespace. The sandbox user itself can too, through the user namespace its rootless
    Podman made (it is root there, over that namespace's network only). Nobody else can.
    """
    if os.geteuid() not in (0, podman_uid):
        return (f"runs with a network need Herald to run as root or as the sandbox user (uid {podman_uid}), to set "
                "the run's packet filter inside its network namespace; they are refused (network none runs are "
                "unaffected)")
    return None


def apply(pid: int, podman_uid: int, v4: Ruleset, v6: Ruleset, *, conmon_pid: int, run_uid: int) -> None:
    """Load both rulesets into the network namespace of process `pid` (the container's waiting init) and read them
    back; SandboxError, before the script could start, if anything is off.

    `conmon_pid` and `run_uid` (a host uid) are what Podman says of the container: the process must be conmon's child
    and already run as the run's uid, so a pid that is not the container's (another PID namespace, a reused pid) is
    never entered.
    """
    why = can_enter(podman_uid)
    if why:
        raise SandboxUnavailable(why)
    paths = tools()
    _check_process(pid, conmon_pid, run_uid)
    netns = _netns_of(pid)
    # Not root: enter the rootless user namespace first, where the sandbox user has CAP_NET_ADMIN over the run's
    # network namespace (and over nothing of the host's).
    namespaces = ["--net"] if os.geteuid() == 0 else ["--user", "--net"]
    for restore, save, ruleset in (("iptables-restore", "iptables-save", v4),
                                   ("ip6tables-restore", "ip6tables-save", v6)):
        _enter(paths, pid, namespaces, [paths[restore]], ruleset.restore_input())
        printed = _enter(paths, pid, namespaces, [paths[save], "-t", "filter"], None)
        _check(printed, ruleset, save)
    _check_process(pid, conmon_pid, run_uid)  # the process we entered is still the container's, in the same netns
    if _netns_of(pid) != netns:
        raise SandboxError("the container's network namespace changed while its filter was set; refusing to run")


def _check_process(pid: int, conmon_pid: int, run_uid: int) -> None:
    try:
        stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        raise SandboxError(f"cannot read the container's process {pid}: {exc.strerror}; refusing to run") from exc
    parent = int(stat_fields[1])  # after "pid (comm)": state, ppid
    uids = next((line.split()[1:] for line in status if line.startswith("Uid:")), [])
    if parent != conmon_pid or uids[:1] != [str(run_uid)]:
        raise SandboxError(f"process {pid} is not the container's (parent {parent}, uid {uids[:1]}; expected conmon "
                           f"{conmon_pid}, uid {run_uid}); refusing to set a filter there")


def _netns_of(pid: int) -> str:
    try:
        netns = os.readlink(f"/proc/{pid}/ns/net")
    except OSError as exc:
        raise SandboxError(f"cannot find the container's network namespace (pid {pid}): {exc.strerror}") from exc
    # Never the host's own: iptables-restore replaces the whole filter table of the namespace it runs in.
    if netns == os.readlink("/proc/self/ns/net"):
        raise SandboxError(f"pid {pid} shares the host's network namespace; refusing to set a filter there")
    return netns


def _enter(paths: dict[str, str], pid: int, namespaces: list[str], argv: list[str], stdin: str | None) -> str:
    cmd = [paths["nsenter"], f"--target={pid}", *namespaces, "--", *argv]
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"could not set the run's packet filter ({argv[0]}): {exc}; refusing to run") from exc
    if done.returncode != 0:
        raise SandboxError(f"could not set the run's packet filter: {Path(argv[0]).name} failed with "
                           f"{done.returncode}: {done.stderr.strip()[:300]}; refusing to run")
    return done.stdout


def _check(printed: str, ruleset: Ruleset, save: str) -> None:
    """The rules read back must be exactly the ones loaded (the proof that the kernel holds them)."""
    lines = printed.splitlines()
    try:
        start = lines.index("*filter")
    except ValueError:
        raise SandboxError(f"{save} shows no filter table in the container; refusing to run") from None
    table = lines[start:]
    rules = tuple(line for line in table if line.startswith("-A "))
    if f":OUTPUT {ruleset.policy}" not in {line.split(" [")[0] for line in table} or rules != ruleset.rules:
        raise SandboxError(f"the run's packet filter reads back differently than it was set ({save}: "
                           f"{'; '.join(rules)}); refusing to run")
