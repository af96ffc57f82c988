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

from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Checkbox, Input, Static

from cockpit.argtypes import non_negative_number, positive_number, whole_number
from cockpit.client import (
    FILL_MODES,
    SWEEP_SORTS,
    BacktestFailed,
    SweepProgress,
    SweepRequest,
)
from cockpit.client import run_sweep_report as run_request
from cockpit.tui.backtest_screen import _field, default_data_file
from cockpit.tui.report_runner import FormError, ReportRunScreen


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


class SweepScreen(ReportRunScreen):
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
    PREFIX = "sw"
    GROUP = "sweep"
    CANCELLING = "cancelling: stopping the cluster..."

    def __init__(self, data_file: str | None = None) -> None:
        super().__init__()
        self._data_file = default_data_file() if data_file is None else data_file
        self._progress: SweepProgress | None = None

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

    def action_run(self) -> None:
        if not self.running:
            self._progress = None
        self.launch(partial(self._run, self.form()))

    def _run(self, form: SweepForm, width: int, cancel: threading.Event) -> str:
        def progress(p: SweepProgress) -> None:
            self._progress = p  # read by the UI timer; no cross-thread call

        return run_sweep_report(form, width=width, progress=progress, cancel=cancel)

    def _show_progress(self) -> None:
        if not self.running:
            return
        text = progress_text(self._progress, time.monotonic() - self._started)
        self._status(text + " · Escape cancels", error=None)
