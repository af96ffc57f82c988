"""Equity and PnL over time (textual-plotext), redrawn about once a second."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult, RenderResult
from textual_plotext import PlotextPlot

from cockpit.tui.fmt import NS_PER_SECOND
from cockpit.tui.pane import Pane

# A series that does not move (its range under FLAT of its level) is drawn over FLAT_SPAN of
# its level around it (100,000 flat: 99,950 to 100,050), or FLAT_MIN at a level near zero.
FLAT = 1e-6
FLAT_SPAN = 0.001
FLAT_MIN = 1.0


def y_range(ys: Sequence[float]) -> tuple[float, float] | None:
    """The y range to draw, or None to let plotext choose it from the data.

    plotext draws a flat series (equity at 100,000 before the first trade) over an axis of
    66,666 to 150,000: its own range is zero, so it pads by a third of the value. A series
    that moves, however little, keeps plotext's range (it uses the plot's whole height)."""
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    mid = (lo + hi) / 2
    if hi - lo > abs(mid) * FLAT:
        return None
    half = max(abs(mid) * FLAT_SPAN, FLAT_MIN) / 2
    return mid - half, mid + half


class CachedPlot(PlotextPlot):
    """A PlotextPlot that builds the plot once per change of data or size.

    PlotextPlot rebuilds the whole plot on every render, and a render happens whenever the
    screen repaints (for example when a dialog closes); the plot only changes once a second.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data_version = 0
        self._cached: tuple[tuple[int, int, int, str], RenderResult] | None = None

    def render(self) -> RenderResult:
        key = (self.data_version, self.size.width, self.size.height, str(self.app.theme))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, super().render())
        return self._cached[1]


class ChartPane(Pane):
    TITLE = "Equity"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._drawn: tuple[Any, ...] = ()
        self.points = 0

    def compose(self) -> ComposeResult:
        yield CachedPlot(id="equity-plot")

    def update_curve(
        self,
        curve: Sequence[Sequence[float]] | Sequence[tuple[int, float]],
        portfolio: dict[str, Any],
    ) -> None:
        """Redraw only when the curve changed: a plot rebuild is the costliest render here."""
        key = (len(curve), tuple(curve[-1]) if curve else None)
        if key == self._drawn:
            return
        self._drawn = key
        self.points = len(curve)
        plot = self.query_one(CachedPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        start = portfolio.get("starting_cash") or (curve[0][1] if curve else 0.0)
        if len(curve) >= 2:
            last_ts = curve[-1][0]
            xs = [(ts - last_ts) / NS_PER_SECOND / 60 for ts, _ in curve]
            ys = [eq for _, eq in curve]
            plt.plot(xs, ys, marker="hd", color="cyan")
            ylim = y_range(ys)
            if ylim is not None:
                plt.ylim(*ylim)
            plt.xlabel("minutes")
        equity = curve[-1][1] if curve else portfolio.get("equity", 0.0)
        pnl = equity - start if start else 0.0
        self.border_title = f"Equity {equity:,.0f} ({pnl:+,.2f})"
        plot.data_version += 1
        plot.refresh()
