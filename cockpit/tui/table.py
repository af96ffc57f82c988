"""A DataTable updated by row key: only changed cells are touched.

Rebuilding a table on every refresh would re-measure and repaint every row ten times a
second; here a refresh adds and removes rows only when the set of keys changes, calls
``update_cell`` only for cells whose content changed, and reorders only when the order did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

Cell = str | Text
BULK = 32  # more removals than this in one sync: clear and re-add instead
Row = tuple[str, Sequence[Cell]]


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _cell_key(cell: Cell) -> Any:
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style), cell.justify, tuple(cell.spans))
    return cell


class KeyedTable(DataTable[Cell]):
    """A row-cursor table with stable row keys and a ``sync`` that applies a desired state."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; scrollbar-size-vertical: 1; overflow-x: hidden; }
    """

    def __init__(
        self,
        columns: Sequence[tuple[str | Text, str] | tuple[str | Text, str, int]],
        *,
        sticky_top: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            id=id, classes=classes, cursor_type="row", cell_padding=0, zebra_stripes=False
        )
        self._columns_spec = list(columns)
        self.column_keys = [spec[1] for spec in self._columns_spec]
        self._cells: dict[str, list[Cell]] = {}
        self._cmp: dict[str, list[Any]] = {}
        self._order: list[str] = []
        self.sticky_top = sticky_top
        self.syncs = 0
        self._reselect: str | None = None
        # The row that slid under the cursor when the one there went away: nobody chose it.
        self._slid: str | None = None
        # The row under the cursor went away and none took its place (the table emptied): the
        # next row to appear there slid there too, whichever refresh brings it.
        self._lost = False

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for spec in self._columns_spec:
            label, key = spec[0], spec[1]
            width = spec[2] if len(spec) > 2 else None
            self.add_column(label, key=key, width=width)

    @property
    def selected_key(self) -> str | None:
        """The row key under the cursor, or None for an empty table."""
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def select_key(self, key: str) -> bool:
        if key not in self._cells:
            return False
        self.move_cursor(row=self._order.index(key), scroll=True)
        return True

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show ``rows`` (in that order), touching only what changed. When the
        row under the cursor goes away, the one that takes its place is noted (take_slid)."""
        before = self.selected_key
        self._sync(rows)
        after = self.selected_key
        if before is not None and before not in self._cells:
            if after is not None:
                self._slid = after
            else:
                self._lost = True
        elif before is None and after is not None and self._lost:
            self._slid, self._lost = after, False
        elif self._slid not in self._cells:
            self._slid = None

    def take_slid(self) -> str | None:
        """The key under the cursor if it slid there by itself (the row that was there went
        away) and the cursor has not moved since; once."""
        slid, self._slid = self._slid, None
        self._lost = False  # (a key on the empty table: the person was told nothing waits)
        return slid if slid is not None and slid == self.selected_key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self._slid is not None and event.row_key.value != self._slid:
            self._slid = None  # the cursor was moved: what it is on now was chosen

    def _sync(self, rows: Sequence[Row]) -> None:
        self.syncs += 1
        wanted = [key for key, _ in rows]
        keep_key = self.selected_key
        at_top = self.cursor_row <= 0
        present = set(wanted)
        gone = [k for k in self._order if k not in present]
        if len(gone) > BULK:
            # remove_row is linear in the table's size; past a few dozen, start afresh.
            self.clear()
            self._cells.clear()
            self._cmp.clear()
            self._order = []
            gone = []
        for key in gone:
            with contextlib.suppress(RowDoesNotExist):
                self.remove_row(key)
            self._cells.pop(key, None)
            self._cmp.pop(key, None)
        order = [k for k in self._order if k in present]
        for key, cells in rows:
            cmp = [_cell_key(c) for c in cells]
            old = self._cmp.get(key)
            if old is None:
                first = cells[0] if cells else ""
                stored = [Text(first) if isinstance(first, str) else first.copy(), *cells[1:]]
                self.add_row(*stored, key=key)
                self._cells[key] = stored
                self._cmp[key] = cmp
                order.append(key)
                continue
            if old == cmp:
                continue
            stored = self._cells[key]
            for i, (a, b) in enumerate(zip(old, cmp, strict=False)):
                if a != b:
                    value = cells[i]
                    if i == 0:  # keep first cells unique objects: they identify rows in sort
                        value = Text(value) if isinstance(value, str) else value.copy()
                    stored[i] = value
                    column = self.columns[ColumnKey(self.column_keys[i])]
                    wider = cell_len(_plain(value)) > column.content_width
                    self.update_cell(key, self.column_keys[i], value, update_width=wider)
            self._cmp[key] = cmp
        if order != wanted:
            position = {id(self._cells[k][0]): i for i, k in enumerate(wanted)}
            self.sort(self.column_keys[0], key=lambda cell: position[id(cell)])
        self._order = wanted
        if not wanted:
            return
        if self._reselect is not None:
            reselect, self._reselect = self._reselect, None
            if reselect in present:
                self.move_cursor(row=wanted.index(reselect), scroll=True)
                return
        if self.sticky_top and at_top:
            # Newest rows arrive on top: a cursor on the top row follows them.
            if self.cursor_row != 0:
                self.move_cursor(row=0, scroll=False)
            if self.scroll_y:
                self.scroll_to(y=0, animate=False)
        elif keep_key is not None and keep_key in present:
            index = wanted.index(keep_key)
            if index != self.cursor_row:
                self.move_cursor(row=index, scroll=False)

    def set_columns(
        self, columns: Sequence[tuple[str | Text, str] | tuple[str | Text, str, int]]
    ) -> bool:
        """Show these columns instead (for example a venue column that comes and goes);
        forgets the rows, keeps the selection for the next ``sync``. True if they changed."""
        if [spec[1] for spec in columns] == self.column_keys:
            return False
        self._columns_spec = list(columns)
        self.column_keys = [spec[1] for spec in self._columns_spec]
        self.remeasure()
        return True

    def remeasure(self) -> None:
        """Forget the rows so the next ``sync`` measures the columns afresh (auto widths only
        grow by themselves); the selection comes back with that sync."""
        keep = self.selected_key
        if self.is_mounted:
            self.reset()
        self._reselect = keep

    def reset(self) -> None:
        """Forget every row and re-measure the columns (when their widths must shrink)."""
        self.clear(columns=True)
        self._add_columns()
        self._cells.clear()
        self._cmp.clear()
        self._order = []
