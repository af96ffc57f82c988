"""The audit trail: every operator action and limit or mode change, newest first — who, from
where, what, the values before and after, why, and whether the engine accepted it. The same
records as ``cockpit audit`` (older ones are there: this view keeps the newest 500)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from cockpit.tui.fmt import NS_PER_SECOND, left
from cockpit.tui.table import KeyedTable, Row
from engine.vocabulary import printable

REFRESH_S = 0.5
EMPTY = (
    "No operator actions yet: kills, releases, pauses, approvals, limit and mode changes "
    "appear here."
)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return f"{v:,.10g}"
    return json.dumps(v, default=str)


def when(ns: Any) -> str:
    """MM-DD HH:MM:SS, UTC: the year is rarely news in an audit view (``cockpit audit`` has it)."""
    if not isinstance(ns, int) or ns <= 0:
        return "-"
    return datetime.fromtimestamp(ns / NS_PER_SECOND, tz=UTC).strftime("%m-%d %H:%M:%S")


def change_text(record: dict[str, Any], width: int = 48) -> str:
    """``what: before -> after`` for each value the action changed, or the engine's message."""
    parts = [
        f"{c.get('what')}: {_value(c.get('before'))} -> {_value(c.get('after'))}"
        for c in record.get("changes") or []
    ]
    text = "; ".join(parts) if parts else str(record.get("message", ""))
    return text if len(text) <= width else text[: width - 1] + "…"


COLUMNS: list[tuple[str | Text, str]] = [
    ("UTC", "time"),
    (" action", "action"),
    (" on", "subject"),
    ("", "result"),
    (" before -> after", "change"),
    (" why", "reason"),
    (" who@from", "who"),
]


def audit_rows(records: list[dict[str, Any]]) -> list[Row]:
    """Newest first; what happened before who did it (at 80 columns the table scrolls)."""
    rows: list[Row] = []
    for rec in reversed(records):
        ok = rec.get("accepted") is True
        rows.append(
            (
                str(rec.get("key")),
                (
                    left(when(rec.get("ts"))),
                    left(printable(f" {rec.get('action', '')}"), "bold"),
                    left(printable(f" {rec.get('subject', '')}")),
                    left(" ok" if ok else " refused", "green" if ok else "bold red"),
                    left(printable(f" {change_text(rec)}")),
                    # An older journal may hold a reason with a newline or a terminal escape.
                    left(printable(f" {rec.get('reason', '')}")),
                    left(printable(f" {rec.get('user')}@{rec.get('client')}")),
                ),
            )
        )
    return rows


def audit_detail(rec: dict[str, Any]) -> Text:
    """The selected record in full on two lines: who, from where and why first (at 80 columns
    the table's who and why columns are off screen), then what changed or the answer."""
    ok = rec.get("accepted") is True
    text = Text()
    text.append(printable(f"{rec.get('user')}@{rec.get('client')}"), "bold")
    text.append(printable(f" {rec.get('action', '')} {rec.get('subject', '')}".rstrip()))
    text.append(" ok" if ok else " refused", "green" if ok else "bold red")
    text.append(printable(f" · why: {rec.get('reason', '')}"))
    text.append("\n")
    text.append(printable(change_text(rec, width=400)))
    return text


class AuditScreen(Screen[None]):
    """Escape goes back; the table follows new actions while open."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]
    DEFAULT_CSS = """
    AuditScreen #audit-box { border: round $panel-lighten-2; border-title-style: bold; }
    AuditScreen #audit-empty { color: $text-muted; padding: 1 2; }
    AuditScreen #audit-hint { color: $text-muted; height: 1; }
    AuditScreen #audit-detail { height: 2; padding: 0 1; }
    """

    def __init__(self, records: Callable[[], tuple[int, list[dict[str, Any]]]]) -> None:
        super().__init__()
        self._records = records
        self._version: int | None = None
        self._by_key: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="audit-box") as box:
            box.border_title = "Audit"
            yield Static(EMPTY, id="audit-empty")
            yield KeyedTable(COLUMNS, id="audit-table")
        yield Static("", id="audit-detail")
        yield Static(
            "Escape: back · older actions: cockpit audit (filters --since, --operator; --csv)",
            id="audit-hint",
        )

    def on_mount(self) -> None:
        self.refresh_records()
        self.set_interval(REFRESH_S, self.refresh_records)
        self.query_one("#audit-table").focus()

    def refresh_records(self) -> None:
        version, records = self._records()
        if version == self._version:
            return
        self._version = version
        self._by_key = {str(rec.get("key")): rec for rec in records}
        self.query_one("#audit-empty").display = not records
        table = self.query_one("#audit-table", KeyedTable)
        table.display = bool(records)
        self.query_one("#audit-detail").display = bool(records)
        table.sync(audit_rows(records))
        self._show_detail()
        box = self.query_one("#audit-box")
        box.border_subtitle = f"{len(records)} shown, newest first"

    def _show_detail(self) -> None:
        key = self.query_one("#audit-table", KeyedTable).selected_key
        rec = self._by_key.get(key) if key else None
        self.query_one("#audit-detail", Static).update(audit_detail(rec) if rec else "")

    @on(DataTable.RowHighlighted, "#audit-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
