"""What the backtest and sweep screens share: a form that runs local research in a worker
thread, a status line, and the scrollable report.

A subclass composes its form with ``#{PREFIX}-status`` (a Static) and ``#{PREFIX}-report`` (a
VerticalScroll holding the ``#report`` Static), reads its form, and calls :meth:`launch` with
the function to run in the thread (it returns the report's text, and may raise ``FormError``
for a one-line error). Enter in any field runs; Escape cancels a run, or closes the screen when
nothing runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from cockpit.client import one_line
from cockpit.tui.dialog import FIELD_TABS


class FormError(ValueError):
    """A field the user typed cannot be used: one line naming the field, shown in the screen."""


class ReportRunScreen(Screen[None]):
    """The run, its status line and its report; see the module doc."""

    PREFIX: ClassVar[str] = ""  # the ids' prefix: "#bt-status", "#bt-report"
    GROUP: ClassVar[str] = ""  # the worker group, and what a run is called ("a backtest")
    CANCELLING: ClassVar[str] = "cancelling..."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel / close"),
        *FIELD_TABS,  # the form's fields, typed fast (a path pasted after a Tab)
        Binding("pageup", "scroll_report(-1)", "Report up", show=False),
        Binding("pagedown", "scroll_report(1)", "Report down", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._cancel: threading.Event | None = None
        self._started = 0.0
        self.report = ""  # the last report's text (tests read it)
        self.error = ""  # the last one-line error

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def action_run(self) -> None:  # the subclass reads its form and calls launch
        raise NotImplementedError

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_run()

    def launch(self, run: Callable[[int, threading.Event], str]) -> bool:
        """Start ``run(width, cancel)`` in a worker thread; False (and a line saying so) when
        one is already running."""
        if self.running:
            self._status(f"a {self.GROUP} is already running (Escape cancels it)", error=True)
            return False
        self._cancel = cancel = threading.Event()
        self._started = time.monotonic()
        self.error = ""
        self.report = ""
        self.query_one("#report", Static).update("")
        self._status("running: loading the data...", error=None)
        width = max(40, self._report_scroll().size.width - 2)
        self.run_worker(
            lambda: run(width, cancel), thread=True, group=self.GROUP, exit_on_error=False
        )
        return True

    def _report_scroll(self) -> VerticalScroll:
        return self.query_one(f"#{self.PREFIX}-report", VerticalScroll)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != self.GROUP or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            return
        cancelled = self._cancel is not None and self._cancel.is_set()
        self._cancel = None
        if event.state == WorkerState.SUCCESS:
            self.report = str(event.worker.result)
            self.query_one("#report", Static).update(Text(self.report))
            self._report_scroll().scroll_home(animate=False)
            self._status(f"done in {time.monotonic() - self._started:.1f} s", error=False)
            return
        exc = event.worker.error
        if cancelled or event.state == WorkerState.CANCELLED:
            message = "cancelled"
        elif isinstance(exc, FormError):
            message = str(exc)
        else:
            message = f"unexpected error: {type(exc).__name__}: {one_line(exc or Exception())}"
        self.error = message
        self._status(message, error=True)

    def _status(self, text: str, *, error: bool | None) -> None:
        status = self.query_one(f"#{self.PREFIX}-status", Static)
        status.update(Text(text))
        status.set_class(error is True, "-error")
        status.set_class(error is False, "-ok")

    def action_cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._status(self.CANCELLING, error=True)
            return
        self.dismiss(None)

    def action_scroll_report(self, direction: int) -> None:
        scroll = self._report_scroll()
        if direction < 0:
            scroll.scroll_page_up(animate=False)
        else:
            scroll.scroll_page_down(animate=False)

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
