"""Log and alerts: safety changes, approvals, operator actions and command replies."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual import events
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


LOG_LINES = 500


class ReflowLog(RichLog):
    """A RichLog that wraps its lines again when its width changes.

    RichLog wraps a line once, at the width it has when the line is written, and a hidden
    pane (80x24 shows one tab at a time) has no width: its lines came out wrapped at 20
    columns and stayed so after the pane was shown or the terminal resized (80 -> 120 -> 80).
    This one keeps the lines' text, writes nothing while it has no width, and writes them
    all again at the new width on a resize. The scrollbar's gutter is kept whether or not
    the scrollbar shows, so a line's width does not change when the log outgrows its height.
    """

    DEFAULT_CSS = "ReflowLog { scrollbar-gutter: stable; overflow-x: hidden; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=LOG_LINES, wrap=True, markup=False, id=id, auto_scroll=True)
        self.texts: deque[Text] = deque(maxlen=LOG_LINES)
        self._wrapped_at = 0

    def add(self, text: Text) -> None:
        self.texts.append(text)
        if self._wrapped_at:
            self.write(text, width=self._wrapped_at)

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        width = self.scrollable_content_region.width
        if width == self._wrapped_at:
            return
        self._wrapped_at = width
        if not width:
            return
        self.clear()
        for text in self.texts:
            self.write(text, width=width, scroll_end=False)
        self.scroll_end(animate=False, immediate=True)


class LogPane(Pane):
    TITLE = "Log · alerts"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._written = 0
        self.lines: list[str] = []  # what was written, for tests and the help of a reader

    def compose(self) -> ComposeResult:
        yield ReflowLog(id="log")

    def update_view(self, view: LocalView) -> None:
        new = view.log_version - self._written
        if new <= 0:
            return
        self._written = view.log_version
        log = self.query_one(ReflowLog)
        for line in list(view.log)[-min(new, len(view.log)) :]:
            text = Text(no_wrap=False)
            text.append(ts_time(line.ts) + " ", style="bright_black")
            text.append(line.text, style=LEVEL_STYLES.get(line.level, ""))
            log.add(text)
            self.lines.append(line.text)
        del self.lines[:-LOG_LINES]
