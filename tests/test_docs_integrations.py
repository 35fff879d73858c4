"""docs/integrations.md shows the test connector exactly as the tests run it."""

from __future__ import annotations

import re

from tests.support import REPO


def test_the_documented_connector_is_the_one_the_conformance_kit_runs() -> None:
    doc = (REPO / "docs" / "integrations.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks[-1] == (REPO / "tests" / "connectors" / "loopchat" / "__init__.py").read_text()
