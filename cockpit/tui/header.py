"""The header: mode badge, profile, trading state, kill switch, venues, UTC clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from cockpit.venue_state import halted_reason
from engine.vocabulary import TRADING_BLOCKED, TradingState

# Named ANSI colours so a 256-colour (or 16-colour) terminal shows them as intended.
MODE_STYLES = {
    "paper": "bold black on cyan",
    "testnet": "bold black on yellow",
    "live": "bold white on red",
}
STATE_STYLES = {
    TradingState.ACTIVE: "bold green",
    TradingState.REDUCING: "bold black on yellow",
    TradingState.HALTED: "bold white on red",
    TRADING_BLOCKED: "bold white on red",  # the journal failed: nothing is sent
}


def header_text(
    snap: dict[str, Any],
    *,
    compact: bool = False,
    muted: bool = False,
    read_only: bool = False,
    label: str = "",
    fit: int | None = None,
) -> Text:
    """One line that answers: where am I trading, may it trade, is the kill switch on, how
    many orders wait for me, may I act (a viewer may not) and will the bell ring?

    What a person must act on comes before the venues' details, so that at 80 columns the
    line's cut-off end is the least urgent part. A line longer than ``fit`` cells first says
    DISCONNECTED without "· reconnecting", then leaves out the profile: a disconnected
    viewer at 80 columns lost the kill switch and the approvals off the end otherwise."""
    text = _header_line(snap, compact, muted, read_only, label, short=False, profile=True)
    for short, profile in ((True, True), (True, False)):
        if fit is None or text.cell_len <= fit:
            break
        text = _header_line(snap, compact, muted, read_only, label, short=short, profile=profile)
    return text


def _header_line(
    snap: dict[str, Any],
    compact: bool,
    muted: bool,
    read_only: bool,
    label: str,
    *,
    short: bool,
    profile: bool,
) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    sep = "│" if compact else " │ "
    if label:  # one engine of a fleet: which one, before anything else
        t.append(f" {label} ", style="bold reverse")
        t.append(" ")
    conn = snap.get("connection")
    link_down = conn is not None and not conn.get("connected", True)
    if link_down and conn is not None and conn.get("stopped"):  # the embedded loop ended
        t.append(" ENGINE STOPPED ", style="bold white on red")
        t.append(" ")
    elif link_down:
        t.append(
            " DISCONNECTED " if short else " DISCONNECTED · reconnecting ",
            style="bold white on red",
        )
        t.append(" ")
    mode = str(snap.get("mode", "?"))
    t.append(f" {mode.upper()} ", style=MODE_STYLES.get(mode, "reverse"))
    if read_only:
        t.append(" READ-ONLY " if compact else " READ-ONLY viewer ", style="bold black on white")
    if profile:
        t.append(f" {snap.get('profile', '')} ", style="bold")
    state = snap.get("trading_state", {}).get("state", "?")
    t.append("│" if compact else "│ ", style="bright_black")
    t.append(f" {state} ", style=STATE_STYLES.get(state, "bold"))
    t.append(sep, style="bright_black")
    kill = snap.get("kill_switch", {})
    if kill.get("engaged"):
        t.append(f" KILL {str(kill.get('level', '')).upper()} ", style="bold white on red")
    else:
        t.append(" kill off " if compact else "kill switch off", style="green")
    pending = len(snap.get("approvals", []))
    if pending:
        t.append(sep, style="bright_black")
        t.append(f" {pending} to approve ", style="bold black on yellow")
    if muted:
        t.append(sep, style="bright_black")
        t.append(" muted " if compact else " bell muted ", style="bold reverse")
    if snap.get("blocked") and state != TRADING_BLOCKED:
        t.append(sep, style="bright_black")
        t.append(" BLOCKED ", style="bold white on red")
    alerts = snap.get("alerts") or {}
    lost = int(alerts.get("failed") or 0) + int(alerts.get("dropped") or 0)
    if lost:  # alerts that did not reach the trader: the Safety pane's line says which
        t.append(sep, style="bright_black")
        t.append(f" alerts ✖{lost} " if compact else f" {lost} alerts lost ", style="bold yellow")
    if snap.get("venues"):
        t.append(sep if compact else " │ ", style="bright_black")
        if compact:
            t.append(" ")
    for i, (venue, info) in enumerate(sorted((snap.get("venues") or {}).items())):
        if i:
            t.append(" ")
        info = info if isinstance(info, dict) else {}
        ok = info.get("connected")
        if halted_reason(info):
            # Trading on this venue is HALTED (reconciliation waits for an answer): in red,
            # whatever its connection; the Venues pane (7) says why and v resolves.
            t.append(
                f"{venue} HALTED" if compact else f" {venue} HALTED ", style="bold white on red"
            )
            if not ok:
                t.append(" ✖", style="bold red")
            elif not compact:
                t.append("●", style="green")
            continue
        t.append(f"{venue} ", style="bold")
        if link_down:  # the engine's view of its venue is not seen: no green dot
            t.append("?", style="bold yellow")
            continue
        t.append("●" if ok else "✖", style="green" if ok else "bold red")
        if not compact:
            t.append(f" {info.get('detail', '')}" if ok else " disconnected", style="")
    return t


class HeaderBar(Horizontal):
    """The top line; the clock comes from the app's injectable clock (stable snapshots)."""

    DEFAULT_CSS = """
    HeaderBar { height: 1; background: $panel; }
    HeaderBar #status { width: 1fr; height: 1; }
    HeaderBar #clock { width: auto; height: 1; padding: 0 1; }
    """

    def __init__(self, clock: Callable[[], datetime], label: str = "") -> None:
        super().__init__()
        self._clock = clock
        self.label = label  # the engine's name, in a fleet
        self._last: tuple[Any, ...] = ()
        self._snap: dict[str, Any] = {}
        self.muted = False
        self.read_only = False

    def compose(self) -> ComposeResult:
        yield Static(Text(" connecting…"), id="status")
        yield Static("", id="clock")

    def set_flags(self, *, muted: bool, read_only: bool) -> None:
        """The cockpit's own state the header shows beside the engine's (redrawn now)."""
        self.muted, self.read_only = muted, read_only
        if self._snap:
            self.update_header(self._snap)

    def update_header(self, snap: dict[str, Any]) -> None:
        self._snap = snap
        compact = self.size.width < 110
        now = self._clock()
        fmt = "%H:%M:%S UTC" if compact else "%Y-%m-%d %H:%M:%S UTC"
        clock = now.strftime(fmt)
        text = header_text(
            snap,
            compact=compact,
            muted=self.muted,
            read_only=self.read_only,
            label=self.label,
            fit=self.size.width - len(clock) - 2 if self.size.width else None,  # clock's padding
        )
        key = (text.plain, tuple(text.spans), clock)
        if key == self._last:
            return
        relayout = not self._last or len(self._last[2]) != len(clock)
        self._last = key
        # One line of fixed height: repaint only, unless the clock's width changes.
        self.query_one("#status", Static).update(text, layout=False)
        self.query_one("#clock", Static).update(clock, layout=relayout)
