"""The entries of `network allow "HOST:PORT", ...`: what a sandboxed script may connect to.

Pure, and shared: the rule checks report a bad entry at its place in the file, and the sandbox checks every entry
again before it builds the run's filter (a task can reach it without a rule: the API, a queue).

HOST is an IPv4 address or a host name (RFC 1123 syntax only: nothing is looked up here). The sandbox resolves each
name when the run is created, on the host, allows exactly the addresses it found and pins them in the container's
/etc/hosts, so the script's own lookup of that name needs no DNS (engine/sandbox/resolve.py). IPv6 is blocked for
every run with a network.
"""

from __future__ import annotations

import ipaddress
import re

NETWORK_WORDS = ("none", "default", "allow")

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # RFC 1123: 1-63 letters, digits, inner hyphens
_MAX_NAME = 253
# A part the C resolver's inet_aton reads as a number (decimal, octal, 0x hex): "0x7f.1" is 127.0.0.1 to it.
_NUMBER = re.compile(r"(0x[0-9a-f]*|[0-9]+)\Z", re.IGNORECASE)


def parse_allow_entry(text: str) -> tuple[str, int]:
    """The host and port of `text` ("192.0.2.10:443", "db.example.org:5432"); ValueError saying what is wrong and
    what to write. The host is an IPv4 address in dotted-decimal form, or a host name in lower case."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"'{text}' has no port: write it as HOST:PORT, e.g. \"{text}:443\"")
    if not host:
        raise ValueError(f"'{text}' has no address: write it as HOST:PORT, e.g. \"192.0.2.10{text}\"")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"'{text}': the port '{port_text}' is not a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"'{text}': the port {port} is not in 1-65535")
    if ":" in host or host.startswith("["):
        raise ValueError(f"'{text}': IPv6 addresses are not supported (runs with a network get IPv4 only)")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return _host_name(text, host), port
    if not allowed_address(address):
        raise ValueError(f"'{text}': {address} is not an address a script can connect out to "
                         "(loopback is the script's own, 0.0.0.0 and multicast are not hosts)")
    return str(address), port


def allowed_address(address: ipaddress.IPv4Address) -> bool:
    """Whether a script may be let out to `address` (the sandbox asks this of each address a name resolves to too)."""
    return not (address.is_unspecified or address.is_multicast or address.is_loopback)


def is_address(host: str) -> bool:
    """Whether `host`, as `parse_allow_entry` returned it, is an address (else a name to resolve)."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _host_name(text: str, host: str) -> str:
    """`host` as a host name, lower case; ValueError when it is neither a name nor a valid IPv4 address."""
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        raise ValueError(f"'{text}': '{host}' is not a valid IPv4 address")
    # The C resolver reads "0x7f.1" or "2130706433" as 127.0.0.1 without a lookup: such a "name" is an address in
    # disguise. An all-digit last label cannot be a name either (RFC 3696 2).
    if all(_NUMBER.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"'{text}': '{host}' is not a valid IPv4 address (write it as four numbers, e.g. "
                         "192.0.2.10) nor a host name")
    if host.endswith("."):
        raise ValueError(f"'{text}': write the host name without the final dot, e.g. \"{host.rstrip('.')}:...\"")
    name = host.lower()
    if len(name) > _MAX_NAME:
        raise ValueError(f"'{text}': the host name is {len(name)} characters long, more than {_MAX_NAME}")
    for label in name.split("."):
        if not label.isascii() or not _LABEL.match(label):
            raise ValueError(f"'{text}': '{host}' is not a valid host name: each dot-separated part is 1-63 letters, "
                             "digits or inner hyphens (e.g. db.example.org)")
    return name


def canonical_entry(text: str) -> str:
    address, port = parse_allow_entry(text)
    return f"{address}:{port}"
