"""The console's table widget: one record type per table, one row per stable key, a bounded number of rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

ROW_CAP = 500
"""Rows kept per table; the oldest go first, so a busy engine cannot grow the console without bound."""

R = TypeVar("R", bound=BaseModel)


def clock(time: str) -> str:
    """Shorten an ISO timestamp to month-day and wall-clock time; anything else is shown as given."""
    try:
        return datetime.fromisoformat(time).strftime("%m-%d %H:%M:%S")
    except ValueError:
        return time


def last_line(text: str, width: int = 60) -> str:
    """The last non-empty line of `text`, cut to `width` cells: a table row has room for one line."""
    lines = [line for line in text.splitlines() if line.strip()]
    tail = lines[-1] if lines else ""
    return tail if len(tail) <= width else tail[: width - 1] + "…"


class RecordTable(DataTable, Generic[R]):
    """A DataTable showing one record type, oldest at the top, one row per stable key, at most ROW_CAP rows."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(column key, label) pairs, in display order."""
    WIDTHS: ClassVar[dict[str, int]] = {}
    """Fixed widths of the columns whose text can be long, so the columns after them stay on an 80-column screen."""
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Detail")]

    def __init__(self, *, id: str, cap: int = ROW_CAP) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.cap = cap
        self.records: dict[str, R] = {}  # by row key: what Enter shows in full
        for key, label in self.COLUMNS:
            self.add_column(label, key=key, width=self.WIDTHS.get(key))

    def current(self) -> R | None:
        """The record under the cursor, if any."""
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self.records.get(str(row_key.value))

    def key_of(self, record: R) -> str:
        """The record's stable id, used as the row key."""
        raise NotImplementedError

    def cells_of(self, record: R) -> tuple[str, ...]:
        """The record's cells, in COLUMNS order."""
        raise NotImplementedError

    def load(self, records: Iterable[R]) -> None:
        """Replace every row with `records` (a fresh snapshot after a (re)connect)."""
        self.clear()
        self.records.clear()
        for record in list(records)[-self.cap :]:
            self.upsert(record)

    def upsert(self, record: R) -> None:
        """Replace the row with the record's key, or append a new row and drop the oldest past the cap."""
        key = self.key_of(record)
        cells = self.cells_of(record)
        self.records[key] = record
        if key in self.rows:
            for (column, _), value in zip(self.COLUMNS, cells, strict=True):
                self.update_cell(key, column, value, update_width=column not in self.WIDTHS)
            return
        following = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        self.add_row(*cells, key=key)
        while self.row_count > self.cap:
            oldest = next(iter(self.rows))
            self.remove_row(oldest)
            self.records.pop(str(oldest.value), None)
        if following:  # keep the newest row in view unless the user has moved up to read older ones
            self.move_cursor(row=self.row_count - 1, animate=False)



def short_id(value: str) -> str:
    """The last 8 characters of an id: ids are time-sortable, so their heads repeat and their tails differ."""
    return value[-8:]
