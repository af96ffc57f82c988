"""Venues: one summary per venue (connection and feed, clock offset, dead-man, reconciliation,
the last venue-wide cancel on kill, the HALT reason in red), and below it the reconciliation
differences as a table with the selected one's whole sentence.

The table and its detail line appear only when some venue reports a difference; until then the
pane is a few lines (the main screen sizes it from ``wanted_height``). The pane is never
filtered by venue: a halted venue must stay in sight whatever the trader is looking at.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from cockpit.tui.fmt import left, truncate
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView
from cockpit.venue_state import (
    Difference,
    clock,
    differences,
    halted_reason,
    halted_venues,
    kind_label,
    last_problem,
    venue_segments,
)

DETAIL_LINES = 3
ROOMY = 70  # narrower than this, one venue's differences need no venue column (the title says)
MAX_TABLE_ROWS = 6  # in the wide layout; the table scrolls beyond
SEP = " · "
INDENT = 2  # continuation lines of a venue's summary


def status_cell(d: Difference) -> Text:
    if d.resolved:
        return left(d.status(), "green")
    if d.blocking:
        return left(d.status(), "bold white on red")
    return left(d.status(), "bright_black")


def venue_lines(
    venues: dict[str, Any], mode: str | None, width: int, *, link_down: bool = False
) -> list[Text]:
    """Each venue's summary wrapped at its pieces into ``width`` columns, then its HALT reason
    (red) and, while it is disconnected, its last problem.

    ``link_down``: the cockpit has lost the engine, so what each venue's line says is only the
    last thing the engine said: marked ``?`` and "last seen", never a green "● connected" for
    a link nobody can see (the header says DISCONNECTED, the approvals' TTLs read "?")."""
    width = max(20, width)
    name_w = max((len(n) for n in venues), default=3)
    lines: list[Text] = []
    for name in sorted(venues):
        info = venues[name] if isinstance(venues[name], dict) else {}
        halted = halted_reason(info)
        connected = bool(info.get("connected"))
        line = Text(no_wrap=True, overflow="ellipsis")
        segments = venue_segments(name, info, mode)
        if link_down:
            line.append("? ", style="bold yellow")
            seen = "connected" if connected else "disconnected"
            segments[0] = (f"unknown, engine link down (last seen {seen})", "yellow")
        else:
            line.append("● " if connected else "✖ ", style="green" if connected else "bold red")
        line.append(f"{name:<{name_w}} ", style="bold")
        fresh = True  # nothing after the name (or the indent) yet
        for text, style in segments:
            if halted and text.startswith("reconciled"):
                text, style = text.split(": ")[0], ""  # the HALTED line below says the rest
            if not fresh and line.cell_len + len(SEP) + len(text) > width:
                lines.append(line)
                line = Text(" " * INDENT, no_wrap=True, overflow="ellipsis")
                fresh = True
            if not fresh:
                line.append(SEP, style="bright_black")
            line.append(text, style=style)
            fresh = False
        lines.append(line)
        if halted:
            reason = halted.removeprefix(f"{name}: ")
            lines.append(_indented(INDENT, f"HALTED: {reason}", "bold red", width))
        problem = last_problem(info)
        if problem and not connected:
            lines.append(_indented(INDENT, f"last problem: {problem}", "yellow", width))
    return lines


def _indented(indent: int, text: str, style: str, width: int) -> Text:
    t = Text(" " * indent, no_wrap=True, overflow="ellipsis")
    t.append(truncate(text, max(8, width - indent)), style=style)
    return t


def difference_detail(d: Difference | None) -> Text:
    if d is None:
        return Text("")
    t = Text(no_wrap=False)
    t.append(d.line, style="bold red" if d.needs_answer else "")
    r = d.resolution
    if r is not None:
        note = f": {r['note']}" if r.get("note") else ""
        t.append(
            f" — {r.get('action')} by {r.get('by')} at {clock(r.get('ts'))}{note}", style="green"
        )
    return t


def _columns(with_venue: bool) -> list[tuple[str | Text, str]]:
    if not with_venue:
        return [("kind", "kind"), (" what", "what"), (" status", "status")]
    return [("venue", "venue"), (" kind", "kind"), (" what", "what"), (" status", "status")]


class VenuesPane(Pane):
    TITLE = "Venues"
    DEFAULT_CSS = f"""
    VenuesPane #venues-lines {{ height: auto; padding: 0 0; }}
    VenuesPane #venues-table {{ height: 1fr; display: none; }}
    VenuesPane #venues-detail {{ height: {DETAIL_LINES}; display: none; }}
    VenuesPane.-diffs #venues-table {{ display: block; }}
    VenuesPane.-diffs #venues-detail {{ display: block; }}
    VenuesPane.-halted {{ border: round $error; }}
    VenuesPane.-halted:focus-within {{ border: round $error-lighten-2; }}
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._diffs: dict[str, Difference] = {}
        self._widths: tuple[int, ...] = ()
        self._lines_key: tuple[Any, ...] = ()
        self._n_lines = 0
        self._detail_key: tuple[Any, ...] = ()
        self.halted: list[str] = []
        self.wanted_height = 3  # border and one line: what the main screen gives it when wide

    def compose(self) -> ComposeResult:
        yield Static(Text("no venue reported yet", style="bright_black"), id="venues-lines")
        yield KeyedTable(_columns(True), id="venues-table")
        yield Static("", id="venues-detail")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def shows_table(self) -> bool:
        return self.has_class("-diffs")

    @property
    def selected(self) -> Difference | None:
        """The difference under the cursor."""
        key = self.table.selected_key
        return self._diffs.get(key) if key else None

    @property
    def differences(self) -> list[Difference]:
        return list(self._diffs.values())

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        venues = snap.get("venues") or {}
        if not isinstance(venues, dict):
            venues = {}
        width = self.size.width or 58
        conn = snap.get("connection")
        link_down = isinstance(conn, dict) and not conn.get("connected", True)
        lines = venue_lines(venues, snap.get("mode"), width, link_down=link_down)
        if not lines:
            lines = [Text("no venue reported yet", style="bright_black")]
        key = tuple((line.plain, tuple(line.spans)) for line in lines)
        if key != self._lines_key:
            self._lines_key = key
            text = Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
            relayout = len(lines) != self._n_lines
            self._n_lines = len(lines)
            self.query_one("#venues-lines", Static).update(text, layout=relayout)

        diffs = differences(venues)
        self._diffs = {d.row_key: d for d in diffs}
        self.set_class(bool(diffs), "-diffs")
        if diffs:
            self._sync_table(diffs, width)
        elif self.table.row_count:
            self.table.sync([])
        self._show_detail()

        self.halted = halted_venues(venues)
        self.set_class(bool(self.halted), "-halted")
        waiting = sum(1 for d in diffs if d.needs_answer)
        title = "Venues"
        if self.halted:
            title += f" · {', '.join(self.halted)} HALTED"
        if waiting:
            title += f" · {waiting} to resolve"
        elif diffs:
            title += f" · {len(diffs)} difference(s)"
        if title != self.border_title:
            self.border_title = title
        subtitle = "v resolve" if any(d.answerable for d in diffs) else ""
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        rows = min(len(diffs), MAX_TABLE_ROWS)
        table = 1 + rows + DETAIL_LINES if diffs else 0
        self.wanted_height = 2 + len(lines) + table

    def _sync_table(self, diffs: list[Difference], width: int) -> None:
        with_venue = width >= ROOMY or len({d.venue for d in diffs}) > 1
        self.table.set_columns(_columns(with_venue))
        venue_w = max(len("venue"), *(len(d.venue) for d in diffs)) if with_venue else 0
        kind_w = max(len(kind_label(d.kind)) for d in diffs) + (1 if with_venue else 0)
        status_w = max(len(" status"), *(len(d.status()) + 1 for d in diffs))
        scrollbar = 1 if len(diffs) > MAX_TABLE_ROWS else 0
        what_w = max(8, width - venue_w - kind_w - status_w - scrollbar)
        widths = (venue_w, kind_w, status_w, what_w)
        if widths != self._widths:
            # A wider status ("cancel by alice") must narrow "what": re-measure the columns.
            self._widths = widths
            self.table.remeasure()
        rows: list[Row] = []
        for d in diffs:
            kind = kind_label(d.kind)
            cells: list[Text] = [
                left(kind, "red" if d.needs_answer else "") if with_venue else Text(kind),
                left(truncate(d.what(), what_w - 1)),
                status_cell(d),
            ]
            if with_venue:
                cells.insert(0, Text(d.venue, style="bold"))
            elif d.needs_answer:
                cells[0].stylize("red")
            rows.append((d.row_key, tuple(cells)))
        self.table.sync(rows)

    def _show_detail(self) -> None:
        d = self.selected
        key: tuple[Any, ...] = (
            (d.row_key, d.line, d.status(), repr(d.resolution)) if d is not None else ("none",)
        )
        if key != self._detail_key:
            self._detail_key = key
            self.query_one("#venues-detail", Static).update(difference_detail(d), layout=False)

    def select(self, row_key: str) -> bool:
        return self.table.select_key(row_key)

    @on(DataTable.RowHighlighted, "#venues-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
