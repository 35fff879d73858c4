"""`network allow "ADDRESS:PORT", ...` in rules (issue 18 item 11): what it compiles to, how a bad entry is reported
(file:line:col, at the entry), and that `herald fmt` and describe give it back."""

from __future__ import annotations

import pytest

from dsl import format_source
from dsl.describe import describe
from dsl.plan import RunAction
from tests.dsl.support import compile_ok, compile_text

RULE = 'rule r:\n  on command fix\n  run backup.sh sandboxed network allow "192.0.2.10:443",   "10.0.0.1:053"\n'


def test_the_allow_list_reaches_the_plan_canonical() -> None:
    graph = compile_ok(RULE).graph
    assert graph is not None
    (run,) = graph.rules[0].actions
    assert isinstance(run, RunAction)
    assert run.network == "allow" and run.network_allow == ("192.0.2.10:443", "10.0.0.1:53")


def test_fmt_and_describe_give_it_back() -> None:
    formatted = format_source(RULE, "r.rules")
    assert 'run backup.sh sandboxed network allow "192.0.2.10:443", "10.0.0.1:053"' in formatted
    assert format_source(formatted, "r.rules") == formatted
    graph = compile_ok(formatted).graph
    assert graph is not None
    assert describe(graph.rules[0].actions[0]) == (
        'run backup.sh sandboxed network allow "192.0.2.10:443", "10.0.0.1:53"')


@pytest.mark.parametrize(("entries", "bad", "message"), [
    ('"192.0.2.10"', '"192.0.2.10"', "'192.0.2.10' has no port: write it as ADDRESS:PORT"),
    ('"192.0.2.10:0"', '"192.0.2.10:0"', "the port 0 is not in 1-65535"),
    ('"192.0.2.10:65536"', '"192.0.2.10:65536"', "the port 65536 is not in 1-65535"),
    ('"192.0.2.10:http"', '"192.0.2.10:http"', "the port 'http' is not a number"),
    ('"192.0.2.300:80"', '"192.0.2.300:80"', "'192.0.2.300' is not a valid IPv4 address"),
    ('"db.example:5432"', '"db.example:5432"', "host names are not supported yet, only IPv4 addresses"),
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
    assert "'network allow' needs at least one \"ADDRESS:PORT\"" in missing.render_all()
    extra = compile_text('on command fix run backup.sh network default "192.0.2.10:443"\n')
    assert "'network default' takes no addresses" in extra.render_all()
    other = compile_text("on command fix run backup.sh network host\n")
    assert "expected 'none', 'default' or 'allow' after 'network', found 'host'" in other.render_all()
