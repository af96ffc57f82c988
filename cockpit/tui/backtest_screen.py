"""Backtest screen: run one strategy over a recorded file and read the report, from the cockpit.

A backtest is not the running engine: it is the same engine core run locally over a file, so
it needs no connection and behaves the same whether the cockpit is embedded or attached over
the socket. It uses the default config with the chosen strategy kind (or configured id) and
params. The screen reaches the engine only through ``cockpit.client`` (a ``BacktestRequest``
in, the report's text out, run in a worker thread); the fields are read with the CLI's own
argument types (``cockpit.argtypes``).

Enter (in any field) runs in a worker thread with a progress line; Escape cancels a run, or
closes the screen when nothing runs. The report is the text ``cockpit backtest`` prints
(without colours), with its equity/drawdown chart drawn at the report's width. A bad file or
bad parameter is one line in the screen, never a traceback.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Checkbox, Input, Static

from cockpit.argtypes import fraction, key_value, non_negative_number, positive_number
from cockpit.client import (
    FILL_MODES,
    BacktestFailed,
    BacktestRequest,
    backtest_strategies,
)
from cockpit.client import run_backtest_report as run_request
from cockpit.tui.report_runner import FormError, ReportRunScreen

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE_BARS = REPO / "tests" / "data" / "nautilus_trader" / "btc-perp-20211231-20220201_1m.csv.xz"
BUILTIN_HINT = "ema_cross, rsi_reversion, donchian_breakout"


def default_data_file() -> str:
    """The real 1-minute BTC bars shipped with the repository (xz), if this is a checkout."""
    return str(SAMPLE_BARS) if SAMPLE_BARS.exists() else ""


@dataclass(frozen=True)
class BacktestForm:
    """The screen's fields as typed."""

    data: str
    strategy: str = ""
    params: str = ""
    qty: str = ""
    fraction: str = ""
    fee_bps: str = ""
    fill: str = "live"
    no_breakers: bool = False


def _field(name: str, text: str, parse: Callable[[str], Any]) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise FormError(f"{name}: {exc}") from None


def parse_params(text: str) -> dict[str, Any]:
    """``"fast=10 slow=30"`` (spaces or commas between) -> ``{"fast": 10, "slow": 30}``."""
    out: dict[str, Any] = {}
    for item in text.replace(",", " ").split():
        key, value = _field("params", item, key_value)
        out[key] = value
    return out


def build_options(form: BacktestForm) -> BacktestRequest:
    """The form as a ``BacktestRequest`` (the CLI's argument types read each value)."""
    if not form.data.strip():
        raise FormError("data file: give the path of a bars or quotes file")
    fill = form.fill.strip() or "live"
    if fill not in FILL_MODES:
        raise FormError(f"fill: must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    return BacktestRequest(
        data=form.data.strip(),
        strategy=form.strategy.strip() or None,
        params=parse_params(form.params),
        qty=_field("qty", form.qty, positive_number("qty")),
        fraction=_field("fraction", form.fraction, fraction),
        fee_bps=_field("fee bps", form.fee_bps, non_negative_number("fee bps")),
        fill=fill,
        breakers=not form.no_breakers,
    )


def plan_text(form: BacktestForm) -> Text:
    """One line: what Enter runs with the form as it is, blanks spelled out."""

    def given(text: str, blank: str) -> str:
        return text.strip() or blank

    t = Text("Enter runs: ", style="bold")
    t.append(f"{given(form.strategy, '(no strategy: type one)')} on ")
    t.append(Path(form.data.strip()).name or "(no data file)")
    t.append(f" · params {given(form.params, 'the strategy config')}")
    sizing = (("qty", form.qty), ("fraction", form.fraction))
    sized = [f"{name} {value.strip()}" for name, value in sizing if value.strip()]
    t.append(f" · {', '.join(sized) if sized else 'size from the config'}")
    t.append(f" · fee {given(form.fee_bps, 'from the config')}")
    t.append(f" · fill {given(form.fill, 'live')} · ")
    if form.no_breakers:
        t.append("breakers OFF", style="bold yellow")
    else:
        t.append("breakers ON", style="bold")
    return t


def run_backtest_report(
    form: BacktestForm,
    *,
    width: int = 100,
    chart: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run the backtest the form describes (default config) and return the report text, as
    ``cockpit backtest`` prints it without colours. Raises ``FormError`` with one line for
    anything the person can fix (file, strategy, params, options)."""
    request = build_options(form)
    try:
        return run_request(request, width=width, chart=chart, progress=progress, cancel=cancel)
    except BacktestFailed as exc:
        raise FormError(str(exc)) from None


class BacktestScreen(ReportRunScreen):
    """The form, a progress/error line and the scrollable report."""

    DEFAULT_CSS = """
    BacktestScreen { background: $surface; padding: 0 1; }
    BacktestScreen #bt-top { height: auto; }
    BacktestScreen #bt-title { text-style: bold; height: 1; }
    BacktestScreen #bt-form {
        grid-size: 4; grid-columns: 10 1fr 10 1fr; grid-gutter: 0 1; height: auto;
    }
    BacktestScreen #bt-form Static { height: 1; color: $text-muted; }
    BacktestScreen #data { column-span: 3; }
    BacktestScreen Checkbox { column-span: 2; }
    BacktestScreen .hint { color: $text-muted; height: auto; }
    BacktestScreen Input > .input--placeholder { color: $text-disabled; text-style: italic; }
    BacktestScreen #bt-plan { height: auto; }
    BacktestScreen #bt-status { height: 1; text-style: bold; }
    BacktestScreen #bt-status.-error { color: $error; }
    BacktestScreen #bt-status.-ok { color: $success; }
    BacktestScreen #bt-report { height: 1fr; border-top: solid $accent; }
    BacktestScreen #report { width: 1fr; }
    """
    PREFIX = "bt"
    GROUP = "backtest"

    def __init__(self, data_file: str | None = None) -> None:
        super().__init__()
        self._data_file = default_data_file() if data_file is None else data_file
        self._progress: tuple[int, int] = (0, 0)

    def compose(self) -> ComposeResult:
        with Vertical(id="bt-top"):
            yield Static("Backtest: a strategy over a recorded file", id="bt-title")
            with Grid(id="bt-form"):
                yield Static("data file")
                yield Input(self._data_file, id="data", compact=True, placeholder="bars/quotes")
                yield Static("strategy")
                yield Input(
                    "ema_cross",
                    id="strategy",
                    compact=True,
                    placeholder="configured id or kind",
                    suggester=SuggestFromList(BUILTIN_HINT.split(", ")),
                )
                yield Static("params")
                yield Input(id="params", compact=True, placeholder="(e.g. fast=10 slow=30)")
                yield Static("qty")
                yield Input(id="qty", compact=True, placeholder="(blank: config's sizing)")
                yield Static("fraction")
                yield Input(id="fraction", compact=True, placeholder="(e.g. 0.02 of equity)")
                yield Static("fee bps")
                yield Input(id="fee_bps", compact=True, placeholder="(blank: config's fee)")
                yield Static("fill")
                yield Input(
                    "live",
                    id="fill",
                    compact=True,
                    placeholder=" | ".join(FILL_MODES),
                    suggester=SuggestFromList(FILL_MODES),
                )
                yield Checkbox("no breakers", id="no_breakers", compact=True)
            yield Static(self._hint(BUILTIN_HINT.split(", ")), id="bt-hint", classes="hint")
            yield Static("", id="bt-plan")
            yield Static("", id="bt-status")
        with VerticalScroll(id="bt-report"):
            yield Static("", id="report")

    def on_mount(self) -> None:
        self.query_one("#strategy", Input).focus()
        self.set_interval(0.2, self._show_progress)
        self._load_choices()
        self._show_plan()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _show_plan(self) -> None:
        """What Enter runs, in words: a grey placeholder looks like a value, so the blank
        fields are named as what they are (the config's) and the breakers as on or off."""
        self.query_one("#bt-plan", Static).update(plan_text(self.form()))

    class ChoicesLoaded(Message):
        """The strategies a backtest can run were listed (posted from the worker thread)."""

        def __init__(self, ids: list[str], kinds: list[str]) -> None:
            super().__init__()
            self.ids = ids
            self.kinds = kinds

    @work(thread=True, group="backtest-choices", exit_on_error=False)
    def _load_choices(self) -> None:
        """Warm the engine's modules up off the UI thread and list the strategies."""
        try:
            ids, kinds = backtest_strategies()
        except Exception:
            return
        self.post_message(self.ChoicesLoaded(ids, kinds))  # thread-safe

    def on_backtest_screen_choices_loaded(self, message: ChoicesLoaded) -> None:
        if not self.is_attached:
            return
        choices = list(dict.fromkeys([*message.ids, *message.kinds]))
        self.query_one("#strategy", Input).suggester = SuggestFromList(choices)
        self.query_one("#bt-hint", Static).update(self._hint(choices))

    @staticmethod
    def _hint(strategies: list[str]) -> str:
        return (
            f"strategy: {' | '.join(strategies)} | module:Class\n"
            f"fill: {'|'.join(FILL_MODES)} · blank: config's · Enter: run · Esc: cancel/close"
        )

    # ------------------------------------------------------------------ running

    def form(self) -> BacktestForm:
        def value(wid: str) -> str:
            return self.query_one(f"#{wid}", Input).value

        return BacktestForm(
            data=value("data"),
            strategy=value("strategy"),
            params=value("params"),
            qty=value("qty"),
            fraction=value("fraction"),
            fee_bps=value("fee_bps"),
            fill=value("fill"),
            no_breakers=self.query_one("#no_breakers", Checkbox).value,
        )

    def action_run(self) -> None:
        if not self.running:
            self._progress = (0, 0)
        self.launch(partial(self._run, self.form()))

    def _run(self, form: BacktestForm, width: int, cancel: threading.Event) -> str:
        def progress(done: int, total: int) -> None:
            self._progress = (done, total)  # read by the UI timer; no cross-thread call

        return run_backtest_report(form, width=width, progress=progress, cancel=cancel)

    def _show_progress(self) -> None:
        if not self.running:
            return
        done, total = self._progress
        elapsed = time.monotonic() - self._started
        if total:
            text = f"running: {done:,} / {total:,} events ({done / total:.0%}), {elapsed:.1f} s"
        else:
            text = f"running: {elapsed:.1f} s"
        self._status(text + " · Escape cancels", error=None)
