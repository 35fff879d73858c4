"""Golden files: each `golden/*.rules` compiles to exactly the rendered diagnostics in its `.expected`.

The expected files are written by hand (checked line by line); there is no switch that rewrites them, so a
change in wording is a change someone reads in review.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsl import compile_sources
from dsl.parser import build_parser
from tests.dsl.support import CATALOG

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.rules"))


def test_there_are_golden_cases() -> None:
    assert {case.stem for case in CASES} >= {
        "misspelt_keyword", "bad_duration", "unknown_names", "end_of_line", "several_errors",
    }  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_rendered_diagnostics_match_the_golden_file(case: Path) -> None:
    result = compile_sources([(f"golden/{case.name}", case.read_text(encoding="utf-8"))], CATALOG)
    expected = case.with_suffix(".expected").read_text(encoding="utf-8")
    assert result.graph is None
    assert result.render_all() + "\n" == expected


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_golden_files_speak_words_not_terminal_names(case: Path) -> None:
    lark = build_parser()
    names = {t.name for t in lark.terminals} | {"$END", "_INDENT", "_DEDENT", "__ANON"}
    pattern = re.compile("|".join(rf"(?<![\w$]){re.escape(n)}(?!\w)" for n in sorted(names)))
    expected = case.with_suffix(".expected").read_text(encoding="utf-8")
    assert pattern.search(expected) is None
