"""`network allow "HOST:PORT", ...` in rules (issue 18 item 11): what it compiles to, how a bad entry is reported
(file:line:col, at the entry), and that `herald fmt` and describe give it back."""

from __future__ import annotations

import pytest

from dsl import format_source
from dsl.describe import describe
from dsl.network import canonical_entry, parse_allow_entry
from dsl.plan import RunAction
from tests.dsl.support import compile_ok, compile_text

RULE = 'rule r:\n  on command fix\n  run backup.sh sandboxed network allow "192.0.2.10:443",   "10.0.0.1:053"\n'


def test_the_allow_list_reaches_the_plan_canonical() -> None:
    graph = compile_ok(RULE).graph
    assert graph is not None
    (run,) = graph.rules[0].actions
    assert isinstance(run, RunAction)
    assert run.network == "allow" and run.network_allow == ("192.0.2.10:443", "10.0.0.1:53")


def test_host_names_compile_and_reach_the_plan_in_lower_case() -> None:
    graph = compile_ok('on command fix run backup.sh network allow "DB.Example.org:5432", "192.0.2.10:443"\n').graph
    assert graph is not None
    (run,) = graph.rules[0].actions
    assert isinstance(run, RunAction)
    assert run.network_allow == ("db.example.org:5432", "192.0.2.10:443")


def test_fmt_and_describe_give_it_back() -> None:
    formatted = format_source(RULE, "r.rules")
    assert 'run backup.sh sandboxed network allow "192.0.2.10:443", "10.0.0.1:053"' in formatted
    assert format_source(formatted, "r.rules") == formatted
    graph = compile_ok(formatted).graph
    assert graph is not None
    assert describe(graph.rules[0].actions[0]) == (
        'run backup.sh sandboxed network allow "192.0.2.10:443", "10.0.0.1:53"')


@pytest.mark.parametrize(("entries", "bad", "message"), [
    ('"192.0.2.10"', '"192.0.2.10"', "'192.0.2.10' has no port: write it as HOST:PORT"),
    ('"db.example.org"', '"db.example.org"', "'db.example.org' has no port: write it as HOST:PORT"),
    ('"db.example.org:0"', '"db.example.org:0"', "the port 0 is not in 1-65535"),
    ('"db_1.example.org:5432"', '"db_1.example.org:5432"', "'db_1.example.org' is not a valid host name"),
    ('"db..example.org:5432"', '"db..example.org:5432"', "'db..example.org' is not a valid host name"),
    ('"db.example.org.:5432"', '"db.example.org.:5432"', "write the host name without the final dot"),
    ('"192.0.2.10:0"', '"192.0.2.10:0"', "the port 0 is not in 1-65535"),
    ('"192.0.2.10:65536"', '"192.0.2.10:65536"', "the port 65536 is not in 1-65535"),
    ('"192.0.2.10:http"', '"192.0.2.10:http"', "the port 'http' is not a number"),
    ('"192.0.2.300:80"', '"192.0.2.300:80"', "'192.0.2.300' is not a valid IPv4 address"),
    ('"[2001:db8::1]:443"', '"[2001:db8::1]:443"', "IPv6 addresses are not supported"),
    ('"127.0.0.1:80"', '"127.0.0.1:80"', "not an address a script can connect out to"),
    ('"192.0.2.10:80", ":80"', '":80"', "':80' has no address"),
])  # fmt: skip
def test_a_bad_entry_is_reported_at_its_place(entries: str, bad: str, message: str) -> None:
    line = f"  run backup.sh network allow {entries}"
    result = compile_text(f"rule r:\n  on command fix\n{line}\n")
    assert result.graph is None
    rendered = result.render_all()
    assert rendered.startswith(f"rules/ops.rules:3:{line.index(bad) + 1}: "), rendered
    assert message in rendered and len(result.diagnostics) == 1, rendered


def test_allow_needs_entries_and_the_others_take_none() -> None:
    missing = compile_text("on command fix run backup.sh network allow\n")
    assert "'network allow' needs at least one \"HOST:PORT\"" in missing.render_all()
    extra = compile_text('on command fix run backup.sh network default "192.0.2.10:443"\n')
    assert "'network default' takes no addresses" in extra.render_all()
    other = compile_text("on command fix run backup.sh network host\n")
    assert "expected 'none', 'default' or 'allow' after 'network', found 'host'" in other.render_all()


# --- the pure parser: syntax only, nothing is looked up ------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("192.0.2.10:443", ("192.0.2.10", 443)),
    ("db.example.org:5432", ("db.example.org", 5432)),
    ("DB.Example.ORG:5432", ("db.example.org", 5432)),
    ("db:5432", ("db", 5432)),  # one label: a name the host's resolver knows (its /etc/hosts, its search domains)
    ("1password.example:443", ("1password.example", 443)),  # labels may start with a digit (RFC 1123)
    ("a-b.x1:1", ("a-b.x1", 1)),
    (f"{'a' * 63}.example:80", (f"{'a' * 63}.example", 80)),
    (".".join(["a" * 63] * 3 + ["b" * 61]) + ":80", (".".join(["a" * 63] * 3 + ["b" * 61]), 80)),  # 253
    ("no-such-name.invalid:53", ("no-such-name.invalid", 53)),  # syntax only: it need not exist
])  # fmt: skip
def test_the_parser_accepts_addresses_and_host_names(text: str, parsed: tuple[str, int]) -> None:
    assert parse_allow_entry(text) == parsed


@pytest.mark.parametrize(("text", "message"), [
    ("-db.example.org:80", "'-db.example.org' is not a valid host name"),
    ("db-.example.org:80", "'db-.example.org' is not a valid host name"),
    (f"{'a' * 64}.example:80", "is not a valid host name"),
    (".".join(["a" * 63] * 3 + ["b" * 62]) + ":80", "the host name is 254 characters long, more than 253"),
    ("caf\u00e9.example:80", "'caf\u00e9.example' is not a valid host name"),
    ("db example.org:80", "is not a valid host name"),
    ("db.example.org/x:80", "is not a valid host name"),
    ("db.example.org:443x", "the port '443x' is not a number"),
    ("db.example.org:", "the port '' is not a number"),
    ("db.example.org:99999", "the port 99999 is not in 1-65535"),
    ("db.example.org:\u0664\u0664\u0663", "is not a number"),  # Arabic-Indic digits are not a port
    ("2001:db8::1:443", "IPv6 addresses are not supported"),
    # The C resolver reads these as addresses without a lookup (127.0.0.1, 10.0.0.1): not names, and not valid.
    ("0x7f.1:80", "'0x7f.1' is not a valid IPv4 address"),
    ("0X7F.0x0.0.01:80", "'0X7F.0x0.0.01' is not a valid IPv4 address"),
    ("2130706433:80", "'2130706433' is not a valid IPv4 address"),
    ("10.1:80", "'10.1' is not a valid IPv4 address"),
    ("db.123:80", "'db.123' is not a valid IPv4 address"),  # an all-digit last label is never a name
])  # fmt: skip
def test_the_parser_refuses_malformed_names_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^'") as refused:
        parse_allow_entry(text)
    assert message in str(refused.value)


def test_canonical_entries_are_what_the_sandbox_gets() -> None:
    assert canonical_entry("DB.example.org:0080") == "db.example.org:80"
    assert canonical_entry("192.0.2.10:053") == "192.0.2.10:53"
