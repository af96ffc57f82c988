"""Sweep screen: backtest a strategy over a parameter grid and read the ranked table.

Like the backtest screen (cockpit/tui/backtest_screen.py), a sweep is local research, not the
running engine: the same core run over a recorded file once per combination, on a Dask
LocalCluster (or in this process with workers 0). The screen reaches the engine only through
``cockpit.client`` (a ``SweepRequest`` in, the table's text out, in a worker thread); fields are
read with the CLI's argument types.

Enter runs; the status line shows done/total, the rate and the ETA; Escape cancels a run (the
cluster it started is closed), or closes the screen when nothing runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Checkbox, Input, Static
from textual.worker import Worker, WorkerState

from cockpit.argtypes import non_negative_number, positive_number, whole_number
from cockpit.client import (
    FILL_MODES,
    SWEEP_SORTS,
    BacktestFailed,
    SweepProgress,
    SweepRequest,
    one_line,
)
from cockpit.client import run_sweep_report as run_request
from cockpit.tui.backtest_screen import FormError, _field, default_data_file


@dataclass(frozen=True)
class SweepForm:
    """The screen's fields as typed."""

    data: str
    strategy: str = "ema_cross"
    grid: str = ""
    qty: str = ""
    fee_bps: str = ""
    fill: str = "live"
    warmup: str = ""
    sort: str = "sharpe"
    random: str = ""
    workers: str = ""
    no_breakers: bool = False


def parse_grid(text: str) -> dict[str, str]:
    """``"fast=5,10,20 slow=30:90:30"`` (spaces between) -> ``{"fast": "5,10,20", ...}``."""
    out: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise FormError(f"grid: expected NAME=VALUES (e.g. fast=5,10,20), got {item!r}")
        if key in out:
            raise FormError(f"grid: {key} given twice")
        out[key] = value
    if not out:
        raise FormError("grid: give at least one NAME=VALUES (e.g. fast=5,10,20 slow=30,60)")
    return out


def build_request(form: SweepForm) -> SweepRequest:
    """The form as a ``SweepRequest`` (the CLI's argument types read each value)."""
    if not form.data.strip():
        raise FormError("data file: give the path of a bars or quotes file")
    if not form.strategy.strip():
        raise FormError("strategy: give a configured id or a kind (e.g. ema_cross)")
    fill = form.fill.strip() or "live"
    if fill not in FILL_MODES:
        raise FormError(f"fill: must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    sort = form.sort.strip() or "sharpe"
    if sort not in SWEEP_SORTS:
        raise FormError(f"sort: must be one of {', '.join(SWEEP_SORTS)}, got {sort!r}")
    return SweepRequest(
        data=form.data.strip(),
        strategy=form.strategy.strip(),
        grid=parse_grid(form.grid),
        qty=_field("qty", form.qty, positive_number("qty")),
        fee_bps=_field("fee bps", form.fee_bps, non_negative_number("fee bps")),
        fill=fill,
        breakers=not form.no_breakers,
        warmup=_field("warm-up", form.warmup, whole_number(0, 100_000_000)) or 0,
        sort=sort,
        random=_field("random", form.random, whole_number(1, 100_000)),
        workers=_field("workers", form.workers, whole_number(0, 4096)),
    )


def progress_text(p: SweepProgress | None, elapsed: float) -> str:
    """``running: 12 / 64 combinations (19%) · 3.10/s · ETA 0:17``."""
    if p is None or not p.total:
        return f"running: starting the cluster, {elapsed:.1f} s"
    eta = "--:--" if p.eta_s is None else _clock(p.eta_s)
    return (
        f"running: {p.done:,} / {p.total:,} combinations ({p.done / p.total:.0%}) · "
        f"{p.rate:.2f}/s · ETA {eta}"
    )


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def run_sweep_report(
    form: SweepForm,
    *,
    width: int = 100,
    progress: Callable[[SweepProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run the sweep the form describes; the table's text. ``FormError``: one line to fix."""
    request = build_request(form)
    try:
        return run_request(request, width=width, progress=progress, cancel=cancel)
    except BacktestFailed as exc:
        raise FormError(str(exc)) from None


class SweepScreen(Screen[None]):
    """The form, a progress/error line and the scrollable table."""

    DEFAULT_CSS = """
    SweepScreen { background: $surface; padding: 0 1; }
    SweepScreen #sw-top { height: auto; }
    SweepScreen #sw-title { text-style: bold; height: 1; }
    SweepScreen #sw-form {
        grid-size: 4; grid-columns: 10 1fr 10 1fr; grid-gutter: 0 1; height: auto;
    }
    SweepScreen #sw-form Static { height: 1; color: $text-muted; }
    SweepScreen #data, SweepScreen #grid { column-span: 3; }
    SweepScreen Checkbox { column-span: 2; }
    SweepScreen .hint { color: $text-muted; height: auto; }
    SweepScreen Input > .input--placeholder { color: $text-disabled; text-style: italic; }
    SweepScreen #sw-status { height: 1; text-style: bold; }
    SweepScreen #sw-status.-error { color: $error; }
    SweepScreen #sw-status.-ok { color: $success; }
    SweepScreen #sw-report { height: 1fr; border-top: solid $accent; }
    SweepScreen #report { width: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel / close"),
        Binding("pageup", "scroll_report(-1)", "Report up", show=False),
        Binding("pagedown", "scroll_report(1)", "Report down", show=False),
    ]

    def __init__(self, data_file: str | None = None) -> None:
        super().__init__()
        self._data_file = default_data_file() if data_file is None else data_file
        self._cancel: threading.Event | None = None
        self._progress: SweepProgress | None = None
        self._started = 0.0
        self.report = ""  # the last table's text (tests read it)
        self.error = ""  # the last one-line error

    def compose(self) -> ComposeResult:
        with Vertical(id="sw-top"):
            yield Static("Sweep: a strategy over a parameter grid", id="sw-title")
            with Grid(id="sw-form"):
                yield Static("data file")
                yield Input(self._data_file, id="data", compact=True, placeholder="bars/quotes")
                yield Static("grid")
                yield Input(
                    "fast=5,10,20 slow=30,60",
                    id="grid",
                    compact=True,
                    placeholder="NAME=5,10,20 or NAME=5:50:5 (spaces between)",
                )
                yield Static("strategy")
                yield Input("ema_cross", id="strategy", compact=True, placeholder="id or kind")
                yield Static("sort")
                yield Input(
                    "sharpe",
                    id="sort",
                    compact=True,
                    placeholder=" | ".join(SWEEP_SORTS),
                    suggester=SuggestFromList(SWEEP_SORTS),
                )
                yield Static("qty")
                yield Input(id="qty", compact=True, placeholder="(blank: config's sizing)")
                yield Static("fee bps")
                yield Input(id="fee_bps", compact=True, placeholder="(blank: config's fee)")
                yield Static("fill")
                yield Input("live", id="fill", compact=True, suggester=SuggestFromList(FILL_MODES))
                yield Static("warm-up")
                yield Input(id="warmup", compact=True, placeholder="(bars; blank: 0)")
                yield Static("random")
                yield Input(id="random", compact=True, placeholder="(N samples; blank: grid)")
                yield Static("workers")
                yield Input(id="workers", compact=True, placeholder="(blank: every core; 0)")
                yield Checkbox("no breakers", id="no_breakers", compact=True)
            yield Static(
                f"sort: {' | '.join(SWEEP_SORTS)} · workers 0 runs here · Enter: run · "
                "Esc: cancel/close",
                classes="hint",
            )
            yield Static("", id="sw-status")
        with VerticalScroll(id="sw-report"):
            yield Static("", id="report")

    def on_mount(self) -> None:
        self.query_one("#grid", Input).focus()
        self.set_interval(0.2, self._show_progress)

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def form(self) -> SweepForm:
        def value(wid: str) -> str:
            return self.query_one(f"#{wid}", Input).value

        return SweepForm(
            data=value("data"),
            strategy=value("strategy"),
            grid=value("grid"),
            qty=value("qty"),
            fee_bps=value("fee_bps"),
            fill=value("fill"),
            warmup=value("warmup"),
            sort=value("sort"),
            random=value("random"),
            workers=value("workers"),
            no_breakers=self.query_one("#no_breakers", Checkbox).value,
        )

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        if self.running:
            self._status("a sweep is already running (Escape cancels it)", error=True)
            return
        form = self.form()
        self._cancel = threading.Event()
        self._progress = None
        self._started = time.monotonic()
        self.error = ""
        self.report = ""
        self.query_one("#report", Static).update("")
        self._status("running: loading the data...", error=None)
        width = max(40, self.query_one("#sw-report", VerticalScroll).size.width - 2)
        self.run_worker(
            partial(self._run, form, width, self._cancel),
            thread=True,
            group="sweep",
            exit_on_error=False,
        )

    def _run(self, form: SweepForm, width: int, cancel: threading.Event) -> str:
        def progress(p: SweepProgress) -> None:
            self._progress = p  # read by the UI timer; no cross-thread call

        return run_sweep_report(form, width=width, progress=progress, cancel=cancel)

    def _show_progress(self) -> None:
        if not self.running:
            return
        text = progress_text(self._progress, time.monotonic() - self._started)
        self._status(text + " · Escape cancels", error=None)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "sweep" or event.state not in (
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
            self.query_one("#sw-report", VerticalScroll).scroll_home(animate=False)
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
        status = self.query_one("#sw-status", Static)
        status.update(Text(text))
        status.set_class(error is True, "-error")
        status.set_class(error is False, "-ok")

    def action_cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._status("cancelling: stopping the cluster...", error=True)
            return
        self.dismiss(None)

    def action_scroll_report(self, direction: int) -> None:
        scroll = self.query_one("#sw-report", VerticalScroll)
        if direction < 0:
            scroll.scroll_page_up(animate=False)
        else:
            scroll.scroll_page_down(animate=False)

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
