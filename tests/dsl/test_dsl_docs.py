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
