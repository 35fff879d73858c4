"""Waits and lengths of time as people write them (`57m`, `1h 5m`), rounded up, never raw seconds (issue 20 item 13)."""

from __future__ import annotations

import pytest

from dsl.values import human_duration


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "1s"), (0.2, "1s"), (42.2, "43s"), (60, "1m"), (61, "1m 1s"), (599, "9m 59s"), (601, "11m"),
    (3000, "50m"), (3419, "57m"), (3600, "1h"), (3900, "1h 5m"), (7199, "2h"), (86400, "1d"), (90000, "1d 1h"),
])
def test_a_wait_reads_as_people_write_it_rounded_up(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown
