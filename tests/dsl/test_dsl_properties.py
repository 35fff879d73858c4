"""Property tests: formatting keeps meaning and is idempotent; no edit of a valid file crashes the compiler."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import compile_sources, format_source, parse, parser
from dsl.ast import RunScript, Span
from tests.dsl.support import CATALOG

REPO = Path(__file__).resolve().parents[2]

TRIGGERS = [
    "on alert", "on alert resolved", "on alert severity critical", "on alert severity >= warning from db",
    "on alert from database label env = prod", 'on alert label env =~ /pr[o]d/ label x != "a b"',
    "on command backup", "on command deploy <app: word> [<n: int = 3>]", "on command go <s: a|b> [<t: text>]",
    "on button mute", "on task backup.sh failed", "on schedule every 90m", "on schedule every day at 03:00 in UTC",
    'on schedule cron "0 3 * * *"', "on event done", "on message matching /disk \\/ full/",
]  # fmt: skip
CLAUSES = [
    "when alert.service = db", "when (alert.a = 1 or alert.b is set) and not alert.c matches /x/",
    'when alert.service in [a, "b c"]', "require role admin", "require confirmation within 2m",
    "require confirmation by another admin within 120s", "dedupe by alert.fingerprint for 30m",
    "group by alert.name within 5m", "at most 2 per 1h", "at most 3 per 60m per command.user",
    'check disk "/var" has 5gb free',
]  # fmt: skip
ACTIONS = [
    "notify ops", "notify ops with buttons", "notify dba with buttons ack, mute 1h",
    'notify @alice saying "{alert.service} is {{down}}"', 'reply "ok \\"quoted\\""', "run backup.sh",
    "run backup.sh sandboxed timeout 1h memory 512m network none args \"a\" \"{x.y}\"", "emit done",
    "silence alert by alert.fingerprint for 1h", "silence alert by button.arg for {button.arg}",
    "escalate to oncall after 15m unless acknowledged",
]  # fmt: skip
# The options of `run`, each written in the ways the grammar takes; `run_actions` picks some in any order.
RUN_OPTIONS = [
    ["sandboxed"], ["timeout 1h", "timeout 90s"], ["memory 512m", "memory 1GiB"],
    ["network none", "network default", 'network allow "192.0.2.10:443"', 'network allow "10.0.0.1:53","192.0.2.1:80"'],
    ['args "a" "{x.y}"', 'args "-v"'], ["retry 3 times", "retry 1", "retry 10 times"], ["backoff 30s", "backoff 2m"],
]  # fmt: skip
COMMENTS = ["", "  # a comment", "\t# another: \"quoted\" /slashed/"]


@st.composite
def run_actions(draw: st.DrawFn) -> str:
    """`run backup.sh` with a random subset of its options in a random order (the printer puts them in one)."""
    kinds = draw(st.permutations(RUN_OPTIONS))[: draw(st.integers(0, len(RUN_OPTIONS)))]
    return " ".join(["run backup.sh", *(draw(st.sampled_from(spellings)) for spellings in kinds)])


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    trigger = draw(st.sampled_from(TRIGGERS))
    clauses = draw(st.lists(st.sampled_from(CLAUSES), max_size=3))
    actions = draw(st.lists(st.sampled_from(ACTIONS) | run_actions(), min_size=1, max_size=3))
    comment = draw(st.sampled_from(COMMENTS))
    if draw(st.booleans()):
        return " ".join([trigger, *clauses, *actions]) + comment
    name = draw(st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True))
    indent = draw(st.sampled_from(["  ", "    ", "\t"]))
    body = [trigger, *clauses, *actions]
    lines = [f"rule {name}:{comment}"]
    for line in body:
        if draw(st.integers(0, 5)) == 0:
            lines.append(f"{indent}# between")
        lines.append(indent + line)
    return "\n".join(lines)


@st.composite
def files(draw: st.DrawFn) -> str:
    rules = draw(st.lists(rule_texts(), min_size=1, max_size=5))
    seps = ["\n", "\n\n", "\n# between rules\n", "\n\n\n"]
    text = rules[0]
    for rule in rules[1:]:
        text += draw(st.sampled_from(seps)) + rule
    return text + draw(st.sampled_from(["", "\n", "\n\n# trailing\n"]))


def strip(node: object) -> object:
    """The AST with every span removed and `sandboxed` set (the formatter always writes it: run is sandboxed)."""
    if isinstance(node, Span):
        return None
    if isinstance(node, RunScript):
        node = dataclasses.replace(node, sandboxed=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, tuple(strip(getattr(node, f.name)) for f in dataclasses.fields(node)))
    if isinstance(node, tuple | list):
        return tuple(strip(item) for item in node)
    return node


def ast_of(text: str) -> object:
    rule_file, diags = parse(text, "p.rules")
    assert rule_file is not None, diags
    return strip(rule_file)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(files())
def test_format_keeps_the_ast_and_is_idempotent(text: str) -> None:
    formatted = format_source(text, "p.rules")
    assert ast_of(formatted) == ast_of(text)
    assert format_source(formatted, "p.rules") == formatted
    assert formatted.count("#") >= text.count("# ")  # comments survive


@FAST
@given(files(), st.data())
def test_random_edits_never_crash_the_compiler(text: str, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if edit == "delete":
            text = text[:where] + text[where + data.draw(st.integers(1, 6)):]
        elif edit == "insert":
            piece = data.draw(st.sampled_from([" ", "\n", "  ", '"', "/", "(", ")", "[", "#", "{", "and", "or ",
                                                "x", "1", "@", "<", ":", "on ", "\t", "é", "\x00"]))
            text = text[:where] + piece + text[where:]
        else:
            text = text[:where] + text[where : where + 12] + text[where:]
    result = compile_sources([("p.rules", text)], CATALOG)
    assert (result.graph is None) == any(d.severity == "error" for d in result.diagnostics)
    for diag in result.diagnostics:
        assert diag.message and diag.span.line >= 1
    result.render_all()


@FAST
@given(files(), st.data())
def test_one_parse_of_the_file_agrees_with_parsing_chunk_by_chunk(text: str, data: st.DataObject) -> None:
    """Parsing many chunks at once is a shortcut: rules, spans and diagnostics are those of one parse per chunk,
    with or without syntax errors."""
    for _ in range(data.draw(st.integers(0, 3))):
        where = data.draw(st.integers(0, len(text)))
        piece = data.draw(st.sampled_from(["\n", " ", "\f", "#", "x", "\n  ", "\r\n", "\t", "(", '"', "notify ops",
                                           "\non alert notify ops\n", "\nrule x:\n", " retry 2 retry 3"]))
        text = text[:where] + piece + text[where:]
    assert parser.parse_recovering(text, "p.rules") == parser.parse_chunk_by_chunk(text, "p.rules")


def test_formatting_the_shipped_files_changes_nothing() -> None:
    for path in [REPO / "rules" / "ops.rules", *sorted((REPO / "examples" / "rules").glob("*.rules"))]:
        text = path.read_text(encoding="utf-8")
        assert format_source(text, str(path)) == text
