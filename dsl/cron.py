"""Cron expressions (`cron "m h dom mon dow"`) read into the sets of values each field allows.

Pure, and shared: the compiler rejects an expression the engine's scheduler could not run (a field out of range, a
date that never comes), and the scheduler (engine.runs.schedules) plans runs from the same reading. Fields take
numbers, `*`, lists, ranges and steps, and names for months (`jan`) and weekdays (`sun`, 0 or 7 = Sunday).
"""

from __future__ import annotations

from dataclasses import dataclass

_MONTHS = {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February as in a leap year


class CronError(ValueError):
    """A cron expression that does not parse, or never matches a date; the message says which field and why."""


@dataclass(frozen=True)
class CronFields:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*` (or `*/N`)
    any_weekday: bool
    any_hour: bool  # hour is exactly `*`


def parse_cron(text: str) -> CronFields:
    """The five fields of `text`; CronError when one is malformed or out of range, or no date ever matches."""
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"a cron expression has 5 fields (minute hour day month weekday), found {len(parts)}")
    minute, hour, day, month, weekday = parts
    fields = CronFields(
        minutes=_field(minute, 0, 59, {}, "minute"), hours=_field(hour, 0, 23, {}, "hour"),
        days=_field(day, 1, 31, {}, "day of month"), months=_field(month, 1, 12, _MONTHS, "month"),
        weekdays=frozenset(d % 7 for d in _field(weekday, 0, 7, _DAYS, "day of week")),
        any_day=day.startswith("*"), any_weekday=weekday.startswith("*"), any_hour=hour == "*",
    )
    # Day of month and weekday both restricted means either one (Vixie cron); a day of month alone must exist.
    if fields.any_weekday and not any(d <= _DAYS_IN_MONTH[m - 1] for m in fields.months for d in fields.days):
        raise CronError("day of month: no month in the expression has that day, so it never runs")
    return fields


def _field(text: str, lo: int, hi: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()

    def number(word: str) -> int:
        word = word.lower()
        if word in names:
            return names[word]
        if not word.isdigit():
            raise CronError(f"{what}: {word!r} is not a number{' or a name' if names else ''}")
        return int(word)

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = number(step_text) if step_text else 1
        if step < 1:
            raise CronError(f"{what}: a step must be at least 1")
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            first, last = (number(w) for w in base.split("-", 1))
        else:
            first = number(base)
            last = hi if step_text else first
        if not lo <= first <= last <= hi:
            raise CronError(f"{what}: {part!r} is outside {lo}-{hi}")
        values.update(range(first, last + 1, step))
    return frozenset(values)
