"""Log and alerts: safety changes, approvals, operator actions and command replies."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import RichLog

from cockpit.tui.fmt import ts_time
from cockpit.tui.pane import Pane
from cockpit.tui.view import LocalView

LEVEL_STYLES = {
    "info": "",
    "ok": "green",
    "warn": "yellow",
    "alert": "bold red",
    "error": "bold red",
}


class LogPane(Pane):
    TITLE = "Log · alerts"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._written = 0
        self.lines: list[str] = []  # what was written, for tests and the help of a reader

    def compose(self) -> ComposeResult:
        yield RichLog(
            max_lines=500, wrap=True, min_width=20, markup=False, id="log", auto_scroll=True
        )

    def update_view(self, view: LocalView) -> None:
        new = view.log_version - self._written
        if new <= 0:
            return
        self._written = view.log_version
        log = self.query_one(RichLog)
        for line in list(view.log)[-min(new, len(view.log)) :]:
            text = Text(no_wrap=False)
            text.append(ts_time(line.ts) + " ", style="bright_black")
            text.append(line.text, style=LEVEL_STYLES.get(line.level, ""))
            log.write(text)
            self.lines.append(line.text)
        del self.lines[:-500]
