"""Every action and its key, in one place: bindings, the help screen and the command palette
all read this list, so a key cannot exist in one and be missing from another."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True)
class KeyAction:
    key: str  # Textual key name(s), comma-separated
    action: str  # App action name (without "action_")
    label: str  # short, for the footer
    help: str  # one line, for the help screen and the palette
    show: bool = True
    display: str = ""  # how the key is written in help (defaults to key)
    # The footer drops the highest ranks first when the line is too long for the terminal
    # (0: always shown; "?" lists everything).
    rank: int = 0

    @property
    def shown_key(self) -> str:
        return self.display or self.key


# The keys that act on the engine: a read-only viewer's key bar leaves them out (help and the
# palette still list them, and pressing one says it needs an operator).
OPERATOR_ACTIONS = frozenset(
    {
        "approve",
        "reject",
        "kill",
        "release",
        "pause",
        "resume",
        "rearm",
        "flatten",
        "resolve",
        "approval_mode",
    }
)

ACTIONS: tuple[KeyAction, ...] = (
    KeyAction("a", "approve", "Approve", "Approve the selected pending intent", rank=1),
    KeyAction("r", "reject", "Reject", "Reject the selected pending intent", rank=1),
    KeyAction("k", "kill", "Kill", "Kill switch: choose a level (entries, halt, flatten)", rank=1),
    KeyAction(
        "R",
        "release",
        "Release",
        "Release the kill switch (type RELEASE and a reason)",
        rank=2,
    ),
    KeyAction(
        "p", "pause", "Pause", "Pause a strategy (picker starts on the selected one)", rank=3
    ),
    KeyAction("u", "resume", "Resume", "Resume a paused strategy", rank=4),
    KeyAction(
        "b", "rearm", "Re-arm", "Re-arm a tripped breaker (then resume its strategy)", rank=4
    ),
    KeyAction("f", "flatten", "Flatten", "Flatten a symbol's position (confirm)", rank=3),
    KeyAction(
        "m",
        "mute",
        "Mute",
        "Mute the bell (again: unmute); errors still ring. The header shows 'muted'",
    ),
    KeyAction(
        "v",
        "resolve",
        "Resolve",
        "Resolve a venue reconciliation difference: adopt, cancel or acknowledge, with a reason",
        show=False,  # in help, the palette and the Venues pane's border; the footer is full
    ),
    KeyAction(
        "slash",
        "filter",
        "Filter",
        "Filter the trace (strategy, symbol, outcome, venue); the venue filters positions "
        "and orders too",
        display="/",
    ),
    KeyAction("x", "clear_filter", "Clear filter", "Clear the trace filter", show=False),
    KeyAction(
        "o",
        "open_chain",
        "Chain",
        "Open the selected decision's chain (Enter on a trace row does the same)",
        show=False,
    ),
    KeyAction("1", "pane(1)", "Market", "Market watch, positions and orders", show=False),
    KeyAction("2", "pane(2)", "Approvals", "Approvals", show=False),
    KeyAction("3", "pane(3)", "Trace", "Decision trace", show=False),
    KeyAction("4", "pane(4)", "Safety", "Safety: state, limits, strategies, breakers", show=False),
    KeyAction("5", "pane(5)", "Chart", "Equity chart", show=False),
    KeyAction("6", "pane(6)", "Log", "Log and alerts", show=False),
    KeyAction(
        "7",
        "pane(7)",
        "Venues",
        "Venues: connection, feed, clock, dead-man, reconciliation differences",
        show=False,
    ),
    KeyAction(
        "B",
        "backtest",
        "Backtest",
        "Backtest a strategy over a recorded file and show the report",
        show=False,  # in help and the palette; the footer line is full at 120 columns
    ),
    KeyAction(
        "S",
        "sweep",
        "Sweep",
        "Sweep a strategy's parameters over a recorded file: a ranked table and a heatmap",
        show=False,
    ),
    KeyAction(
        "M",
        "approval_mode",
        "Mode",
        "Approval mode: switch a strategy between approve and auto (graduation shown; a "
        "reason is required)",
        show=False,
    ),
    KeyAction(
        "L",
        "set_limit",
        "Limit",
        "Change a risk or kill-switch limit (new value and a reason; recorded before -> after)",
        show=False,
    ),
    KeyAction(
        "A",
        "audit",
        "Audit",
        "Audit trail: every operator action and limit/mode change, who, from where, before "
        "-> after, why (as `cockpit audit`)",
        show=False,
    ),
    KeyAction(
        "P",
        "performance",
        "Performance",
        "Performance: each strategy's PnL, round trips, win rate, fees, slippage against the "
        "model; profit per UTC day; order-path latency",
        show=False,
    ),
    KeyAction("question_mark", "help", "Help", "This list of keys", display="?"),
    KeyAction("q", "quit", "Quit", "Quit (asks first while orders are open)"),
)

# Keys the widgets already give (listed in help, not bound here).
WIDGET_KEYS: tuple[tuple[str, str], ...] = (
    ("tab shift+tab", "Move between tables"),
    ("↑ ↓ pgup pgdn", "Move the selection in a table"),
    ("enter", "On a trace row: open that decision's chain"),
    ("ctrl+p", "Command palette: every action above by name"),
    ("escape", "Close a dialog without acting"),
)


def bindings() -> list[BindingType]:
    """The main screen's key bindings, typed as Textual's ``BINDINGS`` declares them."""
    return [
        Binding(a.key, f"app.{a.action}", a.label, show=a.show, key_display=a.display or None)
        for a in ACTIONS
    ]
