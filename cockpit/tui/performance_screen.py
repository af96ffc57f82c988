"""How each strategy is doing, profit per UTC day, and how long the order path takes.

Three views on one screen, drawn from the snapshot's ``performance`` section (the engine keeps
the figures; this screen only shows them, redrawn once a second while it is open): the
per-strategy table (PnL, round trips, win rate, fees, slippage paid against the model's estimate,
exposure, and the strategy's state and why), a bar chart of realized profit per UTC day, and the
latency of each step from a quote to a fill (p50 and p99 over the newest orders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Static

from cockpit.tui.chart import CachedPlot
from cockpit.tui.fmt import fmt_compact, fmt_pct, left, pnl_text, right, truncate
from cockpit.tui.table import KeyedTable, Row
from engine.vocabulary import IntentOrigin

REFRESH_S = 1.0
WHY_WIDTH = 24  # the reason beside a state, cut (the Safety pane and the log have it whole)
NO_FILLS = "No fills yet: each UTC day's realized profit shows here after the first fill."
# The order path's steps as the latency table names them, in the order they happen.
STEPS: tuple[tuple[str, str], ...] = (
    ("quote>decision", "quote → decision"),
    ("decision>durable", "decision → intent durable"),
    ("durable>acknowledged", "durable → acknowledged"),
    ("acknowledged>fill", "acknowledged → fill"),
    ("quote>fill", "quote → fill (whole path)"),
)


def _r(label: str) -> Text:
    return Text(label, justify="right")


STRATEGY_COLUMNS: list[tuple[str | Text, str]] = [
    ("strategy", "strategy"),
    (" state", "state"),
    (_r(" rPnL"), "rpnl"),
    (_r(" uPnL"), "upnl"),
    (_r(" trips"), "trips"),
    (_r(" win%"), "win"),
    (_r(" fees"), "fees"),
    (_r(" slip/model bps"), "slip"),
    (_r(" exposure"), "exposure"),
]
LATENCY_COLUMNS: list[tuple[str | Text, str]] = [
    ("step", "step"),
    (_r(" orders"), "n"),
    (_r(" p50 ms"), "p50"),
    (_r(" p99 ms"), "p99"),
]


def strategy_state(strategy: dict[str, Any], breakers: list[dict[str, Any]]) -> tuple[str, str]:
    """The strategy's state in a word, and why (a tripped breaker or who paused it)."""
    sid = strategy.get("id", "")
    tripped = [
        b for b in breakers if b.get("tripped") and b.get("scope") in (sid, f"strategy:{sid}")
    ]
    if tripped:
        b = tripped[0]
        return "tripped", f"{b.get('name')}: {b.get('reason')}"
    if strategy.get("paused"):
        return "paused", f"by {strategy.get('paused_by')}: {strategy.get('pause_reason')}"
    mode = strategy.get("approval", "")
    return "active", "approve each order" if mode == "approve" else "auto"


def _bps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def strategy_rows(snap: dict[str, Any]) -> list[Row]:
    """One row per configured strategy (a strategy that has not filled shows zeros), then one
    per strategy that filled but is no longer configured: its trades are in the account's PnL
    and its position may still be open, so it must not vanish from the table."""
    perf = {r["strategy"]: r for r in (snap.get("performance") or {}).get("strategies", [])}
    breakers = snap.get("breakers") or []
    strategies = snap.get("strategies") or []
    rows: list[Row] = []
    for s in strategies:
        sid = s.get("id", "")
        rows.append(_strategy_row(sid, perf.get(sid, {}), *strategy_state(s, breakers)))
    configured = {s.get("id", "") for s in strategies}
    for sid in sorted(perf.keys() - configured):
        why = FLATTEN_ROWS.get(sid)
        if why is not None:  # never a strategy: the flatten of what no strategy held
            rows.append(_strategy_row(sid, perf[sid], "flatten", why))
        else:
            rows.append(_strategy_row(sid, perf[sid], "gone", "not in the config now"))
    return rows


# The ids a flatten's remainder (what no strategy held) trades under: they were never in the
# config, so "gone: not in the config now" would send a person looking for a strategy.
FLATTEN_ROWS = {
    IntentOrigin.OPERATOR.value: "an operator's flatten",
    IntentOrigin.FLATTEN.value: "kill switch's flatten",
}


def _strategy_row(sid: str, p: dict[str, Any], state: str, why: str) -> Row:
    style = {
        "tripped": "bold red",
        "paused": "yellow",
        "gone": "bright_black",
        "flatten": "bright_black",
    }.get(state, "green")
    win = p.get("win_rate")
    slip = f"{_bps(p.get('slippage_bps'))}/{_bps(p.get('model_bps'))}"
    return (
        sid,
        (
            left(sid, "bold"),
            Text.assemble((f" {state}", style), (f" {truncate(why, WHY_WIDTH)}", "bright_black")),
            right(pnl_text(p.get("realized_pnl", 0.0), compact=True)),
            right(pnl_text(p.get("unrealized_pnl", 0.0), compact=True)),
            right(str(p.get("round_trips", 0))),
            right("-" if win is None else fmt_pct(win * 100, decimals=0)),
            right(fmt_compact(p.get("fees", 0.0))),
            right(slip),
            right(fmt_compact(p.get("exposure", 0.0))),
        ),
    )


def latency_rows(snap: dict[str, Any]) -> list[Row]:
    steps = (snap.get("performance") or {}).get("latency") or {}
    rows: list[Row] = []
    for key, label in STEPS:
        s = steps.get(key) or {}
        rows.append(
            (
                key,
                (
                    left(label),
                    right(str(s.get("n", 0))),
                    right(_ms(s.get("p50_ms"))),
                    right(_ms(s.get("p99_ms"))),
                ),
            )
        )
    return rows


class PerformanceScreen(Screen[None]):
    """Per-strategy performance, profit per day and latency; Escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]
    DEFAULT_CSS = """
    PerformanceScreen { layout: vertical; }
    PerformanceScreen .box {
        border: round $panel-lighten-2; border-title-style: bold; height: auto;
    }
    PerformanceScreen #perf-strategies { height: auto; max-height: 50%; }
    PerformanceScreen #perf-bottom { height: 1fr; }
    PerformanceScreen #perf-daily { width: 1fr; height: 1fr; }
    PerformanceScreen #perf-latency { width: 50; height: 1fr; }
    PerformanceScreen #perf-strategy-table {
        height: auto; max-height: 100%; overflow-x: auto; scrollbar-size-horizontal: 1;
    }
    PerformanceScreen #perf-daily-empty { color: $text-muted; padding: 1 2; }
    PerformanceScreen #perf-hint { color: $text-muted; height: 1; }
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._snapshot = snapshot
        self._daily_key: tuple[Any, ...] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="perf-strategies", classes="box") as box:
            box.border_title = "Strategies"
            yield KeyedTable(STRATEGY_COLUMNS, id="perf-strategy-table")
        with Horizontal(id="perf-bottom"):
            with Vertical(id="perf-daily", classes="box") as daily:
                daily.border_title = "Profit per UTC day (realized, net of fees)"
                yield Static(NO_FILLS, id="perf-daily-empty")
                yield CachedPlot(id="perf-daily-plot")
            with Vertical(id="perf-latency", classes="box") as lat:
                lat.border_title = "Order path latency"
                yield KeyedTable(LATENCY_COLUMNS, id="perf-latency-table")
        yield Static(
            "Escape: back · left/right: more columns · slippage is paid against the mid of the "
            "quote each fill happened on, beside what the model expected; win% counts trips back "
            "to flat, fees included",
            id="perf-hint",
        )

    def on_mount(self) -> None:
        # Focused, so left/right scroll it: at 80 columns its slippage and exposure columns lie
        # beyond the edge and no key reached them.
        self.query_one("#perf-strategy-table", KeyedTable).focus()
        self.refresh_figures()
        self.set_interval(REFRESH_S, self.refresh_figures)

    def refresh_figures(self) -> None:
        snap = self._snapshot()
        self.query_one("#perf-strategy-table", KeyedTable).sync(strategy_rows(snap))
        self.query_one("#perf-latency-table", KeyedTable).sync(latency_rows(snap))
        self._draw_daily((snap.get("performance") or {}).get("daily") or [])

    def _draw_daily(self, days: list[dict[str, Any]]) -> None:
        key = tuple((d.get("day"), d.get("pnl")) for d in days)
        if key == self._daily_key:
            return
        self._daily_key = key
        empty = not days
        self.query_one("#perf-daily-empty").display = empty
        plot = self.query_one("#perf-daily-plot", CachedPlot)
        plot.display = not empty
        if empty:
            return
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        labels = [str(d["day"])[5:] for d in days]  # MM-DD: the year is in the title
        values = [float(d["pnl"]) for d in days]
        # Horizontal bars, a day a row: the dates sit on their own rows (tick labels under
        # vertical bars moved by a column from one run to the next), gains and losses by colour.
        for gain, color in ((True, "green"), (False, "red")):
            shown = [v if (v >= 0) == gain else 0.0 for v in values]
            plt.bar(labels, shown, orientation="horizontal", color=color, width=0.6)
        plt.title(f"{days[0]['day']} .. {days[-1]['day']}: total {sum(values):+,.2f}")
        plot.data_version += 1
        plot.refresh()
