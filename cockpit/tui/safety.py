"""Safety: trading state, kill switch, limit gauges, strategies (pause/resume) and breakers."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from cockpit.tui.fmt import gauge, left, truncate
from cockpit.tui.header import STATE_STYLES
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.toasts import Toast
from cockpit.tui.view import LocalView
from engine.vocabulary import TradingState, paused_by_failure

BREAKERS_EVERY_S = 0.5

GAUGES = (
    ("daily_loss", "day loss"),
    ("drawdown", "drawdown"),
    ("exposure", "exposure"),
    ("order_rate", "orders"),
)


def _num(v: float) -> str:
    """Whole numbers as such; others with two decimals below 10 and one above (less churn)."""
    if v == int(v):
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def state_text(snap: dict[str, Any]) -> Text:
    ts = snap.get("trading_state", {})
    state = ts.get("state", "?")
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f" {state} ", style=STATE_STYLES.get(state, "bold"))
    kill = snap.get("kill_switch", {})
    if kill.get("engaged"):
        t.append(" KILL ", style="bold white on red")
        t.append(f" {kill.get('level')} by {kill.get('by')}: {kill.get('reason')}", style="red")
    else:
        t.append(" kill switch off", style="green")
        if ts.get("reason") and not snap.get("blocked"):
            t.append(f" · {ts['reason']}", style="yellow")
    if snap.get("blocked"):
        t.append(f" · BLOCKED: {snap['blocked']}", style="bold red")
    alerts = snap.get("alerts")
    if alerts:
        t.append(" · ", style="bright_black")
        t.append_text(alerts_text(alerts))
    return t


def alerts_text(alerts: dict[str, Any]) -> Text:
    """``alerts 12 sent · 2 dropped``: in the warning colour once any failed or was dropped
    (the engine's [alerts]; the snapshot has None without them)."""
    failed, dropped = int(alerts.get("failed") or 0), int(alerts.get("dropped") or 0)
    text = f"alerts {int(alerts.get('sent') or 0)} sent"
    if failed:
        text += f" · {failed} failed"
    if dropped:
        text += f" · {dropped} dropped"
    queued = int(alerts.get("queued") or 0)
    if queued:
        text += f" · {queued} queued"
    return Text(text, style="bold yellow" if failed or dropped else "bright_black")


def gauges_text(limits: dict[str, Any], width: int) -> Text:
    """Limit use as bars, two per line when there is room."""
    per_line = 2 if width >= 62 else 1
    col = width // per_line
    bar_w = max(4, min(16, col - 22))
    t = Text(no_wrap=True, overflow="ellipsis")
    for i, (key, label) in enumerate(GAUGES):
        g = limits.get(key)
        if g is None:
            continue
        value, limit, unit = float(g["value"]), float(g["limit"]), g.get("unit", "")
        cell = Text(f"{label:>9} ")
        cell.append_text(gauge(value, limit, bar_w))
        cell.append(f" {_num(value)}/{_num(limit)}{unit}")
        cell.truncate(col - 1, pad=True)
        t.append_text(cell)
        t.append(" " if (i + 1) % per_line else "\n")
    t.rstrip()
    return t


class SafetyPane(Pane):
    TITLE = "Safety"
    DEFAULT_CSS = """
    SafetyPane #safety-state { height: 1; }
    SafetyPane #safety-top { height: 4; }
    SafetyPane #safety-gauges { width: 1fr; height: 4; }
    SafetyPane #strategies-table { width: 31; height: 4; }
    SafetyPane #breakers-table { height: 1fr; }
    SafetyPane.-halted { border: round $error; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._last: dict[str, Any] = {}
        self._tripped: tuple[int, tuple[str, ...]] | None = None
        self._breakers_at = 0.0
        self._alerts_failed: int | None = None  # failed deliveries last seen (None: not yet)
        self.border_subtitle = "p pause · u resume · b re-arm · k kill · R release"

    def compose(self) -> ComposeResult:
        yield Static("", id="safety-state")
        with Horizontal(id="safety-top"):
            yield Static("", id="safety-gauges")
            yield KeyedTable(
                [("strategy", "strategy"), (" mode", "mode"), (" state", "state")],
                id="strategies-table",
            )
        yield KeyedTable(
            [
                ("", "status"),
                (" breaker", "name"),
                (" scope", "scope"),
                (Text(" use", justify="right"), "use"),
                (" reason", "reason"),
            ],
            id="breakers-table",
        )

    def _toast_failed_alerts(self, alerts: dict[str, Any] | None) -> None:
        """A delivery that failed since the last look: one toast (the desk folds a burst)."""
        failed = int(alerts.get("failed") or 0) if alerts else 0
        before, self._alerts_failed = self._alerts_failed, failed
        if before is None or failed <= before or not alerts:
            return
        last = alerts.get("last") or {}
        what = f": {last.get('title')}" if last and not last.get("ok") else ""
        n = failed - before
        message = f"{n} alert deliver{'y' if n == 1 else 'ies'} failed{what}"
        toast = getattr(self.app, "toast", None)
        if toast is not None:
            toast(Toast("alerts", message, "Alerts", "warning", timeout=10))

    @property
    def selected_strategy(self) -> str | None:
        return self.query_one("#strategies-table", KeyedTable).selected_key

    def _set(self, widget_id: str, text: Text) -> None:
        key = (text.plain, tuple(text.spans))
        if self._last.get(widget_id) != key:
            self._last[widget_id] = key
            self.query_one(f"#{widget_id}", Static).update(text, layout=False)

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        self._set("safety-state", state_text(snap))
        self._toast_failed_alerts(snap.get("alerts"))
        gauges = self.query_one("#safety-gauges", Static)
        width = gauges.size.width or 30
        self._set("safety-gauges", gauges_text(snap.get("limits", {}), width))
        state = snap.get("trading_state", {}).get("state")
        self.set_class(
            state == TradingState.HALTED or snap.get("kill_switch", {}).get("engaged"), "-halted"
        )

        rows: list[Row] = []
        for s in snap.get("strategies", []):
            paused = s.get("paused")
            if paused and paused_by_failure(str(s["id"]), str(s.get("pause_reason") or "")):
                # Its code raised or hung: not called again until a person resumes it (a
                # breaker's pause re-arms by itself, an operator's was chosen).
                state = left("FAILED", "bold white on red")
            elif paused:
                state = left("PAUSED", "bold black on yellow")
            else:
                state = left("active", "green")
            rows.append((s["id"], (truncate(s["id"], 14), left(s.get("approval", "")), state)))
        self.query_one("#strategies-table", KeyedTable).sync(rows)

        # Breaker gauges move with every quote (stale feed age); redrawing the table twice a
        # second is plenty, but a change of what is tripped shows at once.
        tripped = (
            len(snap.get("breakers", [])),
            tuple(
                sorted(
                    f"{b.get('name')}|{b.get('scope')}"
                    for b in snap.get("breakers", [])
                    if b.get("tripped")
                )
            ),
        )
        now = time.monotonic()
        if tripped == self._tripped and now - self._breakers_at < BREAKERS_EVERY_S:
            return
        self._tripped, self._breakers_at = tripped, now
        breakers = sorted(
            snap.get("breakers", []),
            key=lambda b: (not b.get("tripped"), b.get("scope") != "global"),
        )
        brows: list[Row] = []
        for b in breakers:
            tripped = b.get("tripped")
            value, limit = float(b.get("value") or 0.0), float(b.get("limit") or 0.0)
            frac = value / limit if limit else 0.0
            use_style = "bold red" if tripped else "yellow" if frac >= 0.8 else ""
            scope = str(b.get("scope", "")).removeprefix("symbol:")
            brows.append(
                (
                    f"{b.get('name')}|{b.get('scope')}",
                    (
                        Text("●" if tripped else "○", style="bold red" if tripped else "green"),
                        left(truncate(str(b.get("name", "")), 19)),
                        left(truncate(scope, 14)),
                        Text(f" {_num(value)}/{_num(limit)}", style=use_style, justify="right"),
                        left(truncate(b.get("reason", "") or ("TRIPPED" if tripped else "ok"), 60)),
                    ),
                )
            )
        self.query_one("#breakers-table", KeyedTable).sync(brows)
        n_tripped = sum(1 for b in breakers if b.get("tripped"))
        title = f"Safety · {n_tripped} breaker(s) tripped" if n_tripped else "Safety"
        if title != self.border_title:
            self.border_title = title
