"""The documentation and the shipped rule files compile: every example in docs/rules.md, examples/rules, rules/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dsl import Catalog, compile_sources, format_source
from tests.dsl.support import CUSTOMER_ALERT_LINE, CUSTOMER_COMMAND_LINE

REPO = Path(__file__).resolve().parents[2]
DOC_CATALOG = Catalog(
    teams=frozenset({"ops", "dba"}),
    roles=frozenset({"admin", "oncall"}),
    scripts=frozenset({"backup.sh", "restart-db.sh", "rotate-logs.sh"}),
)
EXAMPLES = re.findall(r"```rules\n(.*?)```", (REPO / "docs" / "rules.md").read_text(encoding="utf-8"), re.S)
# Every page a user reads. A fenced block of rules is ```rules (compiled, must be clean), ```herald-error (deliberately
# wrong: must fail to compile) or ```rules-fragment (a piece of a rule, not compiled); rules anywhere else fail.
PAGES = sorted([*REPO.glob("docs/*.md"), *REPO.glob("docs/platforms/*.md"), REPO / "README.md",
                *REPO.glob("examples/**/*.md")])
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
TRANSCRIPT = re.compile(r"^ {4}\$ .*\n(?: {4}.*\n)*", re.M)  # `$ herald check` and what it printed (it quotes rules)
RULE_LINE = re.compile(r"^\s*(on (alert|command|button|task|schedule|event|message)\b|rule [\w-]+:|team [\w-]+ =)",
                       re.M)


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.relative_to(REPO)}:{line}", match.group(2)))
    return found


def test_the_reference_has_examples_of_every_construct() -> None:
    text = "\n".join(EXAMPLES)
    for word in ("team ", "on alert", "on command", "on button", "on task", "on schedule", "on event",
                 "on message", "when ", "require role", "require confirmation", "dedupe by", "group by",
                 "at most", "check disk", "notify", "reply", "run ", "emit", "silence", "escalate", "label ",
                 "cron", "every day at", "matches", " in [", "is set", "memory", "network", "args",
                 "retry", "backoff", "on alert missing"):
        assert word in text, word


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_every_example_in_the_docs_compiles(number: int) -> None:
    result = compile_sources([(f"docs/rules.md#{number}", EXAMPLES[number])], DOC_CATALOG)
    assert result.graph is not None, result.render_all()
    assert all(d.severity == "warning" for d in result.diagnostics), result.render_all()


@pytest.mark.parametrize(("where", "text"), _blocks("rules"), ids=lambda v: v if ".md:" in str(v) else "")
def test_every_rules_block_in_every_page_compiles_clean(where: str, text: str) -> None:
    result = compile_sources([(where, text)], DOC_CATALOG)
    assert result.graph is not None and result.diagnostics == (), result.render_all()


@pytest.mark.parametrize(("where", "text"), _blocks("herald-error"), ids=lambda v: v if ".md:" in str(v) else "")
def test_every_deliberately_wrong_block_fails_to_compile(where: str, text: str) -> None:
    result = compile_sources([(where, text)], DOC_CATALOG)
    assert result.graph is None and any(d.severity == "error" for d in result.diagnostics), where


def test_no_page_shows_rules_outside_a_marked_block() -> None:
    """Rules in an unmarked block (an indented one, or a fence of another language) would escape the tests."""
    unmarked = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        outside = FENCE.sub(lambda m: "" if m.group(1) in ("rules", "herald-error", "rules-fragment") else m.group(2),
                            TRANSCRIPT.sub("", text))
        unmarked += [f"{page.relative_to(REPO)}: {m.group(0).strip()}" for m in RULE_LINE.finditer(outside)]
    assert unmarked == []


def test_the_pages_hold_rules_blocks_beyond_the_reference() -> None:
    assert {where.split(":")[0] for where, _ in _blocks("rules")} >= {"docs/rules.md", "README.md"}


def test_examples_folder_compiles_against_a_stock_install_and_is_formatted() -> None:
    from engine.cli.scaffold import STARTER
    from engine.core.config import Config
    from engine.reload.rules import catalog_for

    starter = Config.model_validate(tomllib.loads(STARTER.format(token="t" * 32)))  # what `herald init` writes
    catalog = catalog_for(starter.model_copy(update={"scripts_dir": REPO / "examples" / "rules" / "scripts"}))
    files = sorted((REPO / "examples" / "rules").glob("*.rules"))
    assert files
    sources = [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in files]
    result = compile_sources(sources, catalog)
    assert result.graph is not None and result.diagnostics == (), result.render_all()
    assert len(result.graph.rules) >= 10
    for path, text in sources:
        assert format_source(text, path) == text, path


def test_default_rules_keep_the_customers_lines_and_compile_with_the_engines_catalog() -> None:
    from engine.core.config import Config
    from engine.reload.rules import catalog_for

    text = (REPO / "rules" / "ops.rules").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert CUSTOMER_ALERT_LINE in lines and CUSTOMER_COMMAND_LINE in lines
    catalog = catalog_for(Config(scripts_dir=REPO / "rules" / "scripts"))
    result = compile_sources([("rules/ops.rules", text)], catalog)
    assert result.graph is not None and result.diagnostics == (), result.render_all()
    assert format_source(text, "rules/ops.rules") == text
