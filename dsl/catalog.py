"""What the rules may name: teams, roles, scripts and the severity scale, as the engine knows them.

The engine builds a `Catalog` from its config and the scripts folder and hands it to `compile_sources`; the
compiler itself never looks anything up, which keeps it pure and makes every check easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class Catalog:
    """The names rules may use; `severities` is ordered from least to most severe."""

    teams: frozenset[str]
    roles: frozenset[str]
    scripts: frozenset[str]
    severities: tuple[str, ...] = DEFAULT_SEVERITIES
