"""A decision's whole chain: inputs, every check's verdict, approval, order and fills."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from cockpit.tui.dialog import Dialog
from cockpit.tui.fmt import fmt_money, fmt_price, fmt_qty, ts_full, ts_time
from cockpit.tui.trace import OUTCOME_STYLES
from cockpit.tui.view import ChainEntry
from engine.vocabulary import IntentOutcome, book_summary, decode_book


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def chain_text(entry: ChainEntry) -> Text:
    """The chain as text, in the order it happened."""
    d = entry.decision
    t = Text()
    key, label = entry.outcome()
    t.append("Outcome: ", style="bold")
    t.append(label, style=OUTCOME_STYLES.get(key, "bold"))
    t.append("\n\n")
    t.append(f"Decision {d.get('decision_id') or entry.decision_id}", style="bold underline")
    t.append(f"  {ts_full(d.get('ts'))}\n")
    t.append(
        f"  {d.get('strategy_id')} on {d.get('symbol')} @ {d.get('venue')}: "
        f"{str(d.get('action', '')).upper()}"
    )
    if d.get("rule"):
        t.append(f"  rule {d['rule']}")
    if d.get("confidence") is not None:
        t.append(f"  confidence {d['confidence']:.2f}")
    if d.get("reduce_only"):
        t.append("  reduce-only")
    t.append(f"\n  reason: {d.get('reason', '')}\n")
    if d.get("entry_decision_id"):
        t.append("  exits the position opened by decision ", style="bold")
        t.append(f"{d['entry_decision_id']}\n")
    for did, rule in entry.exits:
        t.append("  closed by protective exit ", style="bold")
        t.append(f"{did} ({rule.replace('_', ' ')})\n")
    inputs = d.get("inputs") or {}
    if inputs:
        t.append("  inputs: ", style="bold")
        t.append("  ".join(f"{k}={_num(v)}" for k, v in inputs.items()))
        t.append("\n")
    _book(t, entry.book)
    if not entry.intents:
        t.append(
            "\n  No order intent followed (a hold, or sizing gave nothing to trade).\n",
            style="bright_black",
        )
    for ev in entry.intents:
        _intent(t, entry, ev)
    return t


def _book(t: Text, book: dict[str, Any] | None) -> None:
    """The L2 book the decision acted on: every stored level, bids beside asks."""
    if book is None:
        return
    t.append("  book: ", style="bold")
    alarm = "missing" in book and not book.get("no_l2_feed")  # a feed with L2 that had none
    style = "bold red" if alarm else "dim" if "missing" in book else ""
    t.append(book_summary(book).removeprefix("book ") + "\n", style=style)
    levels = decode_book(book)
    if not levels:
        return
    bids, asks = levels["bids"], levels["asks"]
    t.append(f"    {'bid size':>12} {'bid':>12} | {'ask':<12} {'ask size':<12}\n", style="bold")
    for i in range(max(len(bids), len(asks))):
        bid = (
            f"{fmt_qty(bids[i][1]):>12} {fmt_price(bids[i][0]):>12}" if i < len(bids) else " " * 25
        )
        ask = f"{fmt_price(asks[i][0]):<12} {fmt_qty(asks[i][1]):<12}" if i < len(asks) else ""
        t.append(f"    {bid} | {ask}\n", style="bright_black" if i else "")


def _intent(t: Text, entry: ChainEntry, ev: dict[str, Any]) -> None:
    i = ev.get("intent", {})
    iid = i.get("intent_id", "")
    outcome = ev.get("outcome", "")
    t.append("\n")
    t.append(f"Intent {iid}", style="bold underline")
    t.append(f"  {ts_full(ev.get('ts'))}  origin {i.get('origin', 'strategy')}\n")
    t.append(
        f"  {i.get('side')} {fmt_qty(i.get('qty'))} {i.get('symbol')} {i.get('order_type')}"
        + (f" limit {fmt_price(i['limit_price'])}" if i.get("limit_price") else "")
        + f"  ref {fmt_price(i.get('ref_price'))}"
        + f"  notional ~{fmt_money((i.get('qty') or 0) * (i.get('ref_price') or 0))}"
        + ("  reduce-only" if i.get("reduce_only") else "")
        + "\n"
    )
    for v in ev.get("verdicts", []):
        ok = v.get("ok")
        t.append("   ✓ " if ok else "   ✗ ", style="green" if ok else "bold red")
        t.append(f"{v.get('check', ''):<20}", style="" if ok else "bold")
        t.append(f"{v.get('code', ''):<20}", style="" if ok else "red")
        t.append(f"{v.get('message', '')}\n", style="bright_black" if ok else "")
    style = {"submitted": "cyan", "denied": "bold red", "awaiting_approval": "yellow"}.get(
        outcome, "bold"
    )
    t.append("  → ", style="bold")
    t.append(outcome.replace("_", " "), style=style)
    if ev.get("detail"):
        t.append(f"  ({ev['detail']})")
    t.append("\n")
    for req in entry.requests:
        a = req.get("approval", {})
        if a.get("intent_id") != iid or outcome != IntentOutcome.AWAITING_APPROVAL:
            continue
        t.append(f"  Approval {a.get('id')}", style="bold")
        t.append(
            f" requested {ts_time(a.get('created_ts'))}, expires {ts_time(a.get('expires_ts'))};"
            f" est fee {fmt_money(a.get('est_fee'))}, slippage "
            f"{a.get('est_slippage_bps') or 0:.2f} bps\n"
        )
    if outcome == IntentOutcome.AWAITING_APPROVAL:
        for o in entry.approvals:
            if o.get("intent_id") != iid:
                continue
            status = o.get("status", "")
            t.append("  → ", style="bold")
            t.append(
                status,
                style={"approved": "green", "rejected": "red", "expired": "magenta"}.get(
                    status, "yellow"
                ),
            )
            t.append(f" by {o.get('by')} at {ts_time(o.get('ts'))}: {o.get('reason')}\n")
    if outcome == IntentOutcome.SUBMITTED:
        history = entry.orders.get(iid, [])
        if history:
            t.append(f"  Order {iid}\n", style="bold")
        for o in history:
            t.append(
                f"    {ts_time(o.get('ts_updated'))}  {o.get('status', ''):<17}"
                f"filled {fmt_qty(o.get('filled_qty'))}/{fmt_qty(o.get('qty'))}"
                + (f" @ {fmt_price(o['avg_fill_price'])}" if o.get("avg_fill_price") else "")
                + (f"  {o['reason']}" if o.get("reason") else "")
                + "\n"
            )
        fills = [f for f in entry.fills if f.get("client_order_id") == iid]
        for f in fills:
            t.append(
                f"    fill {f.get('fill_id')}: {f.get('side')} {fmt_qty(f.get('qty'))} @ "
                f"{fmt_price(f.get('price'))}  fee {fmt_money(f.get('fee'), decimals=4)} "
                f"{f.get('liquidity')}  realized {fmt_money(f.get('realized_pnl'), signed=True)}\n",
                style="green",
            )


class ChainScreen(Dialog[None]):
    DEFAULT_CSS = """
    ChainScreen > #dialog { width: 110; height: 90%; }
    ChainScreen #chain-scroll { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,q", "cancel", "Close"),
    ]

    REFRESH_S = 0.25  # how often an open chain looks for what happened since

    def __init__(
        self, entry: ChainEntry, current: Callable[[], ChainEntry | None] | None = None
    ) -> None:
        """``current`` finds the decision's chain as the view has it now: the chain on screen
        follows it (an order filling, an approval answered while the trader reads it)."""
        super().__init__()
        self.entry = entry
        self._current = current
        self._shown = (id(entry), entry.version)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                f"Decision chain · {self.entry.strategy} · {self.entry.symbol}",
                id="dialog-title",
            )
            with VerticalScroll(id="chain-scroll"):
                yield Static(chain_text(self.entry), id="chain")
            yield Static("up/down: scroll · Enter/Escape: close", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#chain-scroll").focus()
        if self._current is not None:
            self.set_interval(self.REFRESH_S, self.follow)

    def follow(self) -> None:
        """Show the chain again when it changed (the view's events keep it up to date)."""
        entry = self._current() if self._current is not None else None
        if entry is None:
            return
        shown = (id(entry), entry.version)
        if shown == self._shown:
            return
        self.entry, self._shown = entry, shown
        self.query_one("#chain", Static).update(chain_text(entry))
