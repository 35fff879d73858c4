"""The dead man's switch trigger (issue 19): `on alert missing NAME for D` parses, prints back, lowers to a rule the
engine arms, and is checked like any trigger."""

from __future__ import annotations

from dsl import MissingSpec, format_source
from tests.dsl.support import compile_ok, compile_text


def test_a_missing_trigger_becomes_a_switch_the_engine_arms() -> None:
    graph = compile_ok('rule wd:\n  on alert missing Watchdog for 10m\n  notify ops saying "{heartbeat.summary}"\n'
                       "on alert missing Heartbeat for 1h notify dba\n").graph
    assert graph is not None
    wd, other = graph.rules
    assert wd.kind == "heartbeat" and wd.missing == MissingSpec("Watchdog", 600.0)
    assert other.missing == MissingSpec("Heartbeat", 3600.0)
    # its events match that rule only, by name, like a schedule's
    assert graph.match("heartbeat", {"heartbeat.rule": "wd", "heartbeat.state": "missing"}) == [wd]
    assert graph.match("alert", {"alert.name": "Watchdog", "alert.status": "firing"}) == []


def test_fmt_round_trips_it() -> None:
    assert format_source("on alert   missing Watchdog  for 600s notify ops\n", "r.rules") == \
        "on alert missing Watchdog for 10m notify ops\n"
    block = "rule wd:\n  on alert missing Watchdog for 10m\n  notify ops\n"
    assert format_source(block, "r.rules") == block


def test_it_is_checked_like_any_trigger() -> None:
    def problems(text: str) -> list[str]:
        return [f"{d.span.line}:{d.span.col}: {d.message}" for d in compile_text(text).diagnostics]

    assert problems("on alert missing Watchdog for 30s notify ops\n") == [
        "1:31: 'for 30s' is too short to tell a heartbeat is missing: give 1m or more"]
    assert problems('on alert missing Watchdog for 10m notify ops saying "{alert.summary}"\n') == [
        "1:55: unknown field 'alert.summary' for a heartbeat rule; did you mean 'heartbeat.summary'?"]
    assert problems("on alert missing Watchdog for 10m notify nobody\n") == ["1:42: unknown team 'nobody'"]
    [syntax] = compile_text("on alert missing Watchdog notify ops\n").diagnostics
    assert syntax.span.line == 1 and "'for'" in syntax.message


NAMELESS = ("rules/ops.rules:{line}:{col}: 'on alert missing' needs the name of the heartbeat alert, e.g. "
            "'on alert missing Watchdog for 10m'")


def test_a_forgotten_alert_name_is_said_plainly_at_its_place() -> None:
    def rendered(text: str) -> str:
        result = compile_text(text)
        assert len(result.diagnostics) == 1
        return result.render_all()

    # lark would read 'for' as the name and say "expected 'for' after 'for', found '10m'"
    assert rendered("on alert missing for 10m notify ops\n").splitlines() == [
        NAMELESS.format(line=1, col=18),
        "   on alert missing for 10m notify ops",
        "                    ^^^",
        "   hint: the name is the alertname of the alert that should keep arriving (Alertmanager's Watchdog)"]
    assert rendered("rule wd:\n  on alert missing for 10m\n  notify ops\n").startswith(NAMELESS.format(line=2, col=20))
    assert rendered("on alert missing 10m notify ops\n").startswith(NAMELESS.format(line=1, col=18))
    assert rendered("on alert missing\n").startswith(NAMELESS.format(line=1, col=17))
    # with the name there, a forgotten 'for D' is still said as before
    assert "expected 'for' after 'Watchdog'" in rendered("on alert missing Watchdog notify ops\n")
