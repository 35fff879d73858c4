"""The grammar itself: conflict-free LALR(1), every terminal described in words, keywords whole words only."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from lark import Lark, UnexpectedInput
from lark.common import ParserConf
from lark.parsers.lalr_analysis import LALR_Analyzer

from dsl import parse, parser
from dsl.ast import AlertTrigger, CommandTrigger, Notify, RunScript
from dsl.lalr import NoQuickParse, QuickLALR
from dsl.parser import build_parser
from dsl.syntax_errors import KEYWORDS, TERMINAL_WORDS
from tests.dsl.support import CUSTOMER_ALERT_LINE, compile_text

REPO = Path(__file__).resolve().parents[2]


def test_grammar_has_no_lalr_conflicts() -> None:
    """lark's own strict analysis (what `strict=True` runs), which needs nothing beyond lark itself."""
    lark = build_parser()
    analyzer = LALR_Analyzer(ParserConf(lark.rules, {}, lark.options.start), strict=True)
    analyzer.compute_lalr()  # raises GrammarError on a shift/reduce or reduce/reduce conflict


@pytest.mark.skipif(importlib.util.find_spec("interegular") is None, reason="strict=True needs interegular")
def test_grammar_builds_with_full_strict_mode() -> None:
    """Also checks that no two terminals the lexer may meet in one state can match the same text."""
    build_parser(strict=True)


def test_every_terminal_has_words_and_every_keyword_is_a_terminal() -> None:
    lark = build_parser()
    names = {t.name for t in lark.terminals} - set(lark.ignore_tokens)
    assert names <= set(TERMINAL_WORDS), names - set(TERMINAL_WORDS)
    assert {word.upper() for word in KEYWORDS} <= names
    for word in KEYWORDS:
        assert re.fullmatch(lark.get_terminal(word.upper()).pattern.to_regexp(), word), word


def test_keywords_are_whole_words() -> None:
    (result,) = [compile_text("on command x run runner.sh").diagnostics]
    # 'runner.sh' is a script name, not 'run' followed by 'ner.sh'
    assert [d.message for d in result] == ["unknown script 'runner.sh'"]
    diags = compile_text("on alert notifyops").diagnostics
    assert [d.message for d in diags] == ["unexpected 'notifyops' after 'alert'; did you mean 'notify'?"]


def test_parse_returns_the_ast_with_spans() -> None:
    text = f"{CUSTOMER_ALERT_LINE}\nrule b:\n  on command backup\n  run backup.sh sandboxed timeout 10m\n"
    rule_file, diags = parse(text, "rules/ops.rules")
    assert diags == []
    assert rule_file is not None
    first, second = rule_file.rules
    assert first.name is None
    assert isinstance(first.trigger, AlertTrigger)
    assert (first.trigger.status, first.trigger.severity, first.trigger.service) == (
        "firing",
        "critical",
        "database",
    )
    assert (first.span.line, first.span.col, first.span.end_line, first.span.end_col) == (
        1,
        1,
        1,
        len(CUSTOMER_ALERT_LINE) + 1,
    )
    assert isinstance(first.actions[0], Notify) and first.actions[0].buttons
    assert second.name == "b"
    assert isinstance(second.trigger, CommandTrigger) and second.trigger.span.line == 3
    run = second.actions[0]
    assert isinstance(run, RunScript)
    assert (run.script, run.sandboxed, run.timeout_s) == ("backup.sh", True, 600.0)
    assert (second.span.line, second.span.end_line) == (2, 4)


def test_parse_returns_none_and_every_error_for_bad_text() -> None:
    rule_file, diags = parse("on alert notfy ops\non command\non alert notify ops\n", "x.rules")
    assert rule_file is None
    assert [d.span.line for d in diags] == [1, 2]


def test_no_message_ever_shows_a_lark_terminal_name() -> None:
    lark = build_parser()
    names = {t.name for t in lark.terminals} | {"$END", "_INDENT", "_DEDENT", "__ANON"}
    pattern = re.compile("|".join(rf"(?<![\w$]){re.escape(n)}(?!\w)" for n in sorted(names)))
    samples = [
        "on", "on alert severity", "on alert notify", "on alert notify ops with", "on command", "rule",
        "rule x", "rule x:", "rule x:\non alert notify ops", "rule x:\n  notify ops", "on alert from",
        "on command x run", "on command x run y timeout", "on command x run y timeout 5", "notify ops",
        "on alert notify ops\n  run x", "rule x:\n    on command x\n  run y", "on alert notify ops !",
        "on alert notify ops sandboxed", "on command x require", "on command x require role", "  on alert",
        "on alert\x00", "on alert firing firing notify ops", "on command x run y.sh sandboxed sandboxed",
    ]  # fmt: skip
    for text in samples:
        for diag in compile_text(text).diagnostics:
            shown = f"{diag.message} {diag.hint or ''}"
            assert not pattern.search(shown), (text, shown)
            assert diag.message, text


def _tokens(lark: Lark, text: str) -> list[tuple[object, ...]]:
    """Every token the parser takes from its lexer, with all of its positions, then the error if there is one."""
    out: list[tuple[object, ...]] = []
    try:
        for token in lark.parse_interactive(text).iter_parse():
            out.append((token.type, str(token), token.start_pos, token.line, token.column, token.end_line,
                        token.end_column, token.end_pos))
    except UnexpectedInput as err:
        expected = getattr(err, "expected", None) or getattr(err, "allowed", None) or ()
        token = getattr(err, "token", None)
        out.append((type(err).__name__, err.line, err.column, sorted(expected), str(token), getattr(token, "type", "")))
    return out


def test_the_quick_lexer_makes_lark_s_tokens_and_errors() -> None:
    """dsl.lexer's loop against lark's own: same tokens, positions and errors on every text the tests know."""
    quick, stock = build_parser(), build_parser(quick_lexer=False)
    assert type(quick.parser.lexer.lexer).__name__ == "QuickContextualLexer"
    texts = [path.read_text(encoding="utf-8") for path in sorted(REPO.glob("tests/dsl/golden/*.rules"))]
    texts += [path.read_text(encoding="utf-8") for path in sorted(REPO.glob("examples/rules/*.rules"))]
    texts += re.findall(r"```rules\n(.*?)```", (REPO / "docs" / "rules.md").read_text(encoding="utf-8"), re.S)
    texts += [
        "rule x:\n  on command x  # c\n\n\t\n  run y.sh retry 3 times backoff 1m args \"a b\" \"{command.user}\"\n",
        "on alert when alert.service in [a, \"b\", @c] and not (alert.x matches /a\\/b/)\r\nnotify ops\r\n",
        "on alert notify ops \x00", "on alert  \f notify ops saying \"unclosed\n", "  on alert", "on alert é",
        "rule x:\n    on alert\n  notify ops\n", "on alert notify ops   ", "on alert notify ops\n   \n#x",
    ]
    for text in texts:
        assert _tokens(quick, text) == _tokens(stock, text), text


def _built(lark: Lark, parse: Callable[[str], object], text: str) -> object:
    builder = lark.options.transformer
    builder.begin("p.rules", 0)
    try:
        parse(text)
    except (UnexpectedInput, NoQuickParse) as err:
        return type(err)
    return builder.items, builder.diagnostics


def test_the_quick_lalr_loop_builds_what_lark_s_parser_builds() -> None:
    lark = build_parser()
    quick = QuickLALR.for_parser(lark)
    assert quick is not None and quick.plans_own_steps  # it knows every callback chain of this grammar
    texts = [path.read_text(encoding="utf-8") for path in sorted(REPO.glob("examples/rules/*.rules"))]
    texts += re.findall(r"```rules\n(.*?)```", (REPO / "docs" / "rules.md").read_text(encoding="utf-8"), re.S)
    texts += ["on command x run y.sh retry 2 retry 3\non alert when a.b = 1 and a.c = 2 or a.d = 3 notify ops\n"]
    for text in (parser._source(parser._chunks(text)) for text in texts):  # as parse_recovering feeds them
        assert _built(lark, quick.parse, text) == _built(lark, lark.parse, text), text
    for broken in ["on alert notfy ops\n", "rule x:\non alert notify ops\n", "on alert é\n", "on command\n"]:
        assert _built(lark, quick.parse, broken) is NoQuickParse
        assert _built(lark, lark.parse, broken) is not NoQuickParse


def test_a_file_without_syntax_errors_never_needs_lark_s_own_parser_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    lark = parser._parser()
    calls: list[str] = []
    monkeypatch.setattr(lark, "parse", lambda text: calls.append(text))
    text = (REPO / "examples" / "rules" / "ops.rules").read_text(encoding="utf-8")
    rule_file, diags = parse(text, "ops.rules")
    assert rule_file is not None and rule_file.rules and calls == []
