"""The entries of `network allow "ADDRESS:PORT", ...`: what a sandboxed script may connect to.

Pure, and shared: the rule checks report a bad entry at its place in the file, and the sandbox checks every entry
again before it builds the run's filter (a task can reach it without a rule: the API, a queue).

Only IPv4 addresses for now: a host name would have to be resolved when the filter is built, and the script's own
lookups would then need DNS, which is itself a way out. IPv6 is blocked for every run with a network.
"""

from __future__ import annotations

import ipaddress

NETWORK_WORDS = ("none", "default", "allow")


def parse_allow_entry(text: str) -> tuple[str, int]:
    """The address and port of `text` ("192.0.2.10:443"); ValueError saying what is wrong and what to write."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"'{text}' has no port: write it as ADDRESS:PORT, e.g. \"{text}:443\"")
    if not host:
        raise ValueError(f"'{text}' has no address: write it as ADDRESS:PORT, e.g. \"192.0.2.10{text}\"")
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
        if all(part.isdigit() for part in host.split(".")):
            raise ValueError(f"'{text}': '{host}' is not a valid IPv4 address") from None
        raise ValueError(f"'{text}': host names are not supported yet, only IPv4 addresses "
                         f"(write the address '{host}' has, e.g. \"192.0.2.10:{port}\")") from None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise ValueError(f"'{text}': {address} is not an address a script can connect out to "
                         "(loopback is the script's own, 0.0.0.0 and multicast are not hosts)")
    return str(address), port


def canonical_entry(text: str) -> str:
    address, port = parse_allow_entry(text)
    return f"{address}:{port}"
