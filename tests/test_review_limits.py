"""An adversarial review of the pre-trade limits under composition: each test is a hole found by
attacking a limit with several orders, strategies, approvals and fills at once (single orders at
the boundary are pinned in test_checks.py), failing before its fix. The property drives random
sequences through the real core and the paper broker and judges every order the broker gets
against an independent book (the broker's own open orders and the fills). Every wait is
bounded; COCKPIT_LIMITS_EXAMPLES raises the property examples.

Tried and found holding:
- two strategies on one symbol, each within its own share: the position and gross checks count
  the symbol's net position and every open order, whoever sent them;
- resting limit orders plus a market order: open orders count at their worst (every order on
  the order's side fills, none on the other), in flight from the moment they are submitted;
- several approvals pending at once, each fine alone, approved one after another: each is
  checked again at approval against the book as it is then (max open positions, position,
  gross, throttle), and a pending request reserves nothing;
- partial fills: what is left of an order keeps counting until it is done;
- a market order filled at a later quote than the one it was checked on (the paper broker's
  latency): the check counts quantities, so the fill adds nothing the check did not see;
- protective exits and flattens (operator and kill switch) with other strategies' orders
  resting: reduce-only, never larger than the position less the open orders already closing
  it, so none flips a position, even two exits of two strategies at once;
- a limit lowered at run time below the position held: adding is denied, reducing passes;
- the order-rate throttle per strategy and for all strategies, exits and flattens counted but
  never held back;
- sizing from equity at 0, negative, NaN or tiny: size 0, denied as SIZE_ZERO, never sent;
- rounding to the venue's lot: down, never up over a limit (a dust residue added to an entry
  is checked with it);
- a cancel that loses the race to a fill (as on a venue): a protective exit waits for the
  cancel's answer and is sized again on the next event, a moved limit is sent for what is
  left only once the cancel took, a kill switch's flatten is judged again at the send
  (HALTED asks whether it only reduces);
- fees: the cash check charges the taker fee on every buy and every open buy.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.checks import check_cash, floor_to_step
from engine.commands import SetLimitArgs, execute
from engine.config import parse_config
from engine.core import CancelOrder, EngineCore, SubmitOrder
from engine.events import IntentChecked, OrderUpdated
from engine.paper_broker import PaperBroker
from engine.portfolio import Portfolio
from engine.strategies.base import Strategy
from engine.types import (
    NS_PER_SECOND,
    Action,
    Bar,
    Fill,
    Instrument,
    LimitSpec,
    Liquidity,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionView,
    Quote,
    Side,
    Signal,
)
from engine.vocabulary import IntentOutcome, TradingState
from tests.test_safety_engine import (
    BTC,
    Harness,
    harnesses,  # noqa: F401  (the fixture the tests take)
    scripted_config,
)
from tests.test_safety_engine import buy as engine_buy
from tests.test_safety_engine import denied_codes as engine_denied
from tests.test_safety_engine import sell as engine_sell
from tests.test_safety_engine import start as engine_start
from tests.test_safety_engine import strategy as engine_strategy

# Hypothesis examples per property (more with COCKPIT_LIMITS_EXAMPLES).
EXAMPLES = int(os.environ.get("COCKPIT_LIMITS_EXAMPLES", "150"))

X, Y = "X/USDT", "Y/USDT"
T0 = 1_700_000_000 * NS_PER_SECOND
INSTRUMENTS = {
    X: Instrument(X, "sim", 0.01, 0.001, 0.0, 5.0),
    Y: Instrument(Y, "sim", 0.01, 0.01, 0.0, 5.0),
}
FEE = 0.001  # the core's taker fee rate (EngineCore's default), which the cash check uses


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scripted(Strategy):
    """Says on the next quote of its symbol what the test told it to (``next``), then nothing."""

    kind: ClassVar[str] = "scripted"
    Params: ClassVar[type[BaseModel]] = _NoParams

    def __init__(self, strategy_id: str, symbol: str) -> None:
        super().__init__(strategy_id, symbol, _NoParams(), True)
        self.next: Signal | None = None

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        signal, self.next = self.next, None
        return signal


def make_core(
    strategies: list[tuple[str, str, str, dict[str, Any], dict[str, Any] | None]],
    risk: dict[str, Any],
    cash: float,
) -> tuple[EngineCore, dict[str, Scripted]]:
    """A core on X and Y with the given strategies (id, symbol, approval, sizing, exits)."""
    cfg = parse_config(
        {
            "market": {
                "simulated": {"symbols": {X: {"initial_price": 100.0}, Y: {"initial_price": 50.0}}}
            },
            "risk": risk,
            "broker": {
                "paper": {
                    "latency_median_ms": 40.0,
                    "latency_sigma": 0.0,
                    "impact_level_notional": 0.0,
                }
            },
            "safety": {
                # the kill switch is engaged by hand here (the loss limits have their tests)
                "kill_switch": {"daily_loss_limit_pct": 100, "drawdown_limit_pct": 100},
                "breakers": {  # the breakers have their own tests: here they only get in the way
                    "consecutive_losses": 1000,
                    "global_consecutive_losses": 1000,
                    "max_unreviewed_fills": 100_000,
                    "orders_per_minute": 1000,
                    "consecutive_rejects": 1000,
                },
            },
            "strategies": [
                {
                    "id": sid,
                    "kind": "ema_cross",
                    "symbols": [sym],
                    "timeframe_s": 1,
                    "approval": approval,
                    "allow_short": True,
                    "sizing": sizing,
                    **({"exits": exits} if exits else {}),
                }
                for sid, sym, approval, sizing, exits in strategies
            ],
        }
    )
    strats = [Scripted(sid, sym) for sid, sym, *_ in strategies]
    core = EngineCore(cfg, list(strats), dict(INSTRUMENTS), Portfolio(cash), fee_rate=FEE)
    return core, {s.strategy_id: s for s in strats}


class Book:
    """The book as the paper venue has it, kept apart from the core: positions and cash from
    the fills, open orders from the broker itself, mids from the quotes the core accepted.
    ``on_submit`` judges each order the broker is handed against the limits in force."""

    def __init__(self, core: EngineCore, broker: PaperBroker, cash: float) -> None:
        self.core = core
        self.broker = broker
        self.pos = {X: 0.0, Y: 0.0}
        self.cash = cash
        self.mid: dict[str, float] = {}
        self.sent: list[tuple[int, str]] = []  # (ts, strategy) of every order sent
        self.reduce_only: dict[str, bool] = {}
        self.problems: list[str] = []
        self.own: dict[tuple[str, str], float] = {}  # each strategy's position, from its fills

    def equity(self) -> float:
        return self.cash + sum(q * self.mid.get(s, 0.0) for s, q in self.pos.items())

    def open_orders(self) -> list[Order]:
        return [o for o in self.broker.open_orders() if o.order_type is not OrderType.STOP_MARKET]

    def open_side(self, sym: str, side: Side) -> float:
        return sum(o.remaining for o in self.open_orders() if o.symbol == sym and o.side is side)

    def worst(self, sym: str, extra: Order | None = None) -> float:
        """The symbol's largest possible position: either side's open orders filling alone."""
        buys, sells = self.open_side(sym, Side.BUY), self.open_side(sym, Side.SELL)
        if extra is not None:
            buys += extra.qty if extra.side is Side.BUY else 0.0
            sells += extra.qty if extra.side is Side.SELL else 0.0
        return max(abs(self.pos[sym] + buys), abs(self.pos[sym] - sells))

    def on_submit(self, order: Order, intent: OrderIntent) -> None:
        lim, sym, sign = self.core.limits, order.symbol, order.side.sign
        what = f"{order.client_order_id} {intent.origin} {order.strategy_id} {order.side}"
        what += f" {order.qty:g}"
        self._rate(order, intent, what)
        if order.side is Side.BUY:
            self._cash(order, intent, what)
        pos = self.pos[sym]
        before = pos + sign * self.open_side(sym, order.side)
        after = before + sign * order.qty
        if order.reduce_only:
            reducible = min(abs(pos), abs(before)) if before * pos > 0 else 0.0
            if pos * sign >= 0 or order.qty > reducible * (1 + 1e-9):
                self.problems.append(f"reduce-only beyond the reducible {reducible:g}: {what}")
            return
        if after * before >= 0 and abs(after) <= abs(before):
            return  # it only shrinks the worst case: no limit holds it back
        equity, mark = self.equity(), self.mid[sym]
        price = order.limit_price if order.limit_price is not None else intent.ref_price
        if order.qty * price > lim.max_order_notional * (1 + 1e-9):
            self.problems.append(f"order notional {order.qty * price:.2f}: {what}")
        cap = lim.max_position_fraction * equity
        if abs(after) * mark > cap + abs(cap) * 1e-9:
            self.problems.append(f"position {abs(after) * mark:.2f} over {cap:.2f}: {what}")
        gross = sum(
            self.worst(s, order if s == sym else None) * self.mid.get(s, 0.0) for s in self.pos
        )
        cap = lim.max_gross_exposure_fraction * equity
        if gross > cap + abs(cap) * 1e-9:
            self.problems.append(f"gross {gross:.2f} over {cap:.2f}: {what}")
        held = {s for s, q in self.pos.items() if abs(q) > 1e-12}
        held |= {o.symbol for o in self.open_orders()} | {sym}
        if len(held) > lim.max_open_positions:
            self.problems.append(f"open positions {sorted(held)}: {what}")

    def resting_within(self, why: str) -> None:
        """What rests on top of what is held, each side's limits filling alone, is within max
        position (or, already beyond it, no more than the position itself)."""
        lim, equity = self.core.limits, self.equity()
        cap = lim.max_position_fraction * equity
        for sym, pos in self.pos.items():
            for side in (Side.BUY, Side.SELL):
                resting = sum(
                    o.remaining
                    for o in self.open_orders()
                    if o.symbol == sym
                    and o.side is side
                    and o.order_type is OrderType.LIMIT
                    and not o.reduce_only
                )
                worst = abs(pos + side.sign * resting)
                if resting and worst > abs(pos) and worst * self.mid[sym] > cap * (1 + 1e-9):
                    self.problems.append(f"{why}: {sym} {side} resting {resting:g} over {cap:.2f}")

    def nothing_rests_that_could_add(self, why: str) -> None:
        """Under the kill switch at entries (REDUCING), what works at the venue cannot grow a
        position: no limit that is not reduce-only on a position's side (or on a flat symbol),
        and while one rests on the closing side, the closing side's orders all filling (market
        orders in flight and reduce-only ones first) stop at flat."""
        for sym, pos in self.pos.items():
            opened = [o for o in self.open_orders() if o.symbol == sym]
            adding = [
                o
                for o in opened
                if o.order_type is OrderType.LIMIT
                and not o.reduce_only
                and (pos == 0.0 or o.side.sign * pos > 0.0)
            ]
            if adding:
                self.problems.append(f"{why}: {sym} {adding[0].side} limit rests at {pos:g}")
            closing = [o for o in opened if pos and o.side.sign * pos < 0.0]
            # (a market order sent before the kill is done at once: only limits are held to it)
            free = [o for o in closing if o.order_type is OrderType.LIMIT and not o.reduce_only]
            total = sum(o.remaining for o in closing)
            if free and total > abs(pos) * (1 + 1e-9) + 1e-9:
                self.problems.append(f"{why}: {sym} closing {total:g} of a position {pos:g}")

    def paused_adds_nothing(self, sid: str) -> None:
        """A paused strategy has nothing resting that could grow its own position: no limit
        (not reduce-only) on its position's side, and while one rests on the closing side, its
        closing orders all filling stop at flat."""
        for sym in self.pos:
            pos = self.own.get((sid, sym), 0.0)
            if abs(pos) < 1e-9:
                pos = 0.0
            mine = [o for o in self.open_orders() if o.symbol == sym and o.strategy_id == sid]
            limits = [o for o in mine if o.order_type is OrderType.LIMIT and not o.reduce_only]
            if any(pos == 0.0 or o.side.sign * pos > 0.0 for o in limits):
                self.problems.append(f"{sid} paused: a limit that adds rests on {sym} at {pos:g}")
            closing = sum(o.remaining for o in mine if pos and o.side.sign * pos < 0.0)
            if limits and closing > abs(pos) * (1 + 1e-9) + 1e-9:
                self.problems.append(f"{sid} paused: closing {closing:g} of its {pos:g} {sym}")

    def _cash(self, order: Order, intent: OrderIntent, what: str) -> None:
        """A buy's cost, with every open buy's: a limit at its limit price (the most it may
        cost), a market order at the mid (as the check prices it)."""
        reserved = 0.0
        for o in self.open_orders():
            if o.side is Side.BUY:
                reserved += o.remaining * (o.limit_price or self.mid[o.symbol]) * (1 + FEE)
        price = order.limit_price if order.limit_price is not None else intent.ref_price
        cost = order.qty * price * (1 + FEE)
        if cost > (self.cash - reserved) + abs(self.cash - reserved) * 1e-9 + 1e-9:
            self.problems.append(
                f"buy costs {cost:.2f}, cash {self.cash:.2f} less {reserved:.2f} reserved: {what}"
            )

    def _rate(self, order: Order, intent: OrderIntent, what: str) -> None:
        """Exits and the kill switch's flatten are not held back, but every order counts."""
        now, lim = self.core.now, self.core.limits
        if intent.origin not in ("exit", "flatten"):
            for name, throttle, mine in (
                ("strategy", lim.strategy_throttle, True),
                ("global", lim.global_throttle, False),
            ):
                since = now - round(throttle.per_seconds * NS_PER_SECOND)
                n = sum(
                    1
                    for ts, sid in self.sent
                    if ts > since and (not mine or sid == order.strategy_id)
                )
                if n >= throttle.max_orders:
                    self.problems.append(f"{name} throttle: {n} sent before {what}")
        self.sent.append((now, order.strategy_id))

    def on_fill(self, fill: Fill) -> None:
        key = (fill.strategy_id, fill.symbol)
        self.own[key] = self.own.get(key, 0.0) + fill.qty * fill.side.sign
        before = self.pos[fill.symbol]
        self.pos[fill.symbol] = after = before + fill.qty * fill.side.sign
        self.cash -= fill.qty * fill.price * fill.side.sign + fill.fee
        flipped = before * after < 0 and abs(after) > 1e-9 * max(1.0, abs(before))
        if flipped and self.reduce_only.get(fill.client_order_id):
            self.problems.append(f"a reduce-only fill flipped {before:g} -> {after:g}")


class Driver:
    """The core and the paper broker driven as ``Engine.process`` drives them (see
    tests/core_driver.py), with the independent ``Book`` watching what reaches the broker."""

    def __init__(self, core: EngineCore, strats: dict[str, Scripted], cash: float) -> None:
        self.core, self.strats = core, strats
        self.broker = PaperBroker(core.cfg.paper)
        self.book = Book(core, self.broker, cash)
        self.ts = T0
        self.events: list[Any] = []
        self.races = 0

    def handle(self, items: Any) -> None:
        core = self.core
        for item in items:
            if type(item) is SubmitOrder:
                refused = core.refused_at_send(item)
                if refused is not None:
                    self.handle(refused)
                    continue
                self.book.on_submit(item.order, item.intent)
                self.book.reduce_only[item.order.client_order_id] = item.order.reduce_only
                self.handle(core.on_broker(self._fills(self.broker.submit(item.order, core.now))))
            elif type(item) is CancelOrder:
                self.handle(core.on_broker(self._fills(self._cancel(item))))
            else:
                self.events.append(item)

    def _cancel(self, cancel: CancelOrder) -> list[Any]:
        """The paper venue's cancel; while ``races`` is above 0, a resting limit's cancel loses
        the race to a fill instead (it filled at its limit before the cancel got there), as
        on a venue."""
        coid, now = cancel.client_order_id, self.core.now
        order = next((o for o in self.broker.open_orders() if o.client_order_id == coid), None)
        done = self.broker.cancel(coid, now, cancel.reason)
        if not (self.races and done and order is not None and order.limit_price is not None):
            return done
        self.races -= 1
        left, price = order.remaining, order.limit_price
        order.avg_fill_price = (order.avg_fill_price * order.filled_qty + price * left) / order.qty
        order.filled_qty = order.qty
        order.move_to(OrderStatus.FILLED, now)
        fill = Fill(
            f"race-{coid}",
            coid,
            order.strategy_id,
            order.symbol,
            "sim",
            order.side,
            left,
            price,
            0.0,
            Liquidity.MAKER,
            now,
        )
        return [fill, OrderUpdate(order, now)]

    def _fills(self, items: list[Any]) -> list[Any]:
        for item in items:
            if isinstance(item, Fill):
                self.book.on_fill(item)
        return items

    def quote(
        self, sym: str, mid: float, half: float = 0.05, size: float = 5.0, dt_ms: int = 500, **kw
    ) -> None:
        self.ts += dt_ms * 1_000_000
        bid, ask = round(mid - half, 2), round(mid + half, 2)
        q = Quote(
            sym, bid, ask, kw.get("bid_size", size), kw.get("ask_size", size), self.ts, self.ts
        )
        out = self.core.on_quote(q)
        if out is None:
            return  # rejected: it reaches nothing
        self.book.mid[sym] = (bid + ask) * 0.5
        self.handle(out)
        items = self.broker.on_quote(q)
        if items:
            self.handle(self.core.on_broker(self._fills(items)))
        self.handle(self.core.tick(self.ts))

    def say(self, sid: str, action: Action, limit: LimitSpec | None = None, exit_=False) -> None:
        self.strats[sid].next = Signal(action, "scripted", "test", 1.0, {}, exit_, limit)

    def intents(self) -> list[IntentChecked]:
        return [e for e in self.events if type(e) is IntentChecked]


# --------------------------------------------------------------------------- cash


def test_a_resting_buy_limit_holds_its_cash_at_its_limit_price_not_at_a_lower_mark() -> None:
    """Found: open buys were reserved at the mark only. A buy limit resting at 99.95 while the
    market fell to 90 (the paper venue fills it at its limit, behind the queue shown there)
    held 4,504.50 instead of the 5,002.50 it costs; another strategy's market buy spent the
    difference and the limit's fill took spot cash to -397. A buy limit is now reserved at
    its limit price when that is above the mark: one lot less than the cash left passes, one
    lot more is denied, and the cash never goes below zero."""
    risk = {
        "max_order_notional": 1e6,
        "max_position_fraction": 1.0,
        "max_gross_exposure_fraction": 10.0,  # leverage allowed: cash is the binding limit
        "price_collar_pct": 5.0,
    }
    fixed = [
        ("s1", X, "auto", {"model": "fixed_qty", "qty": 50.0}, None),
        ("s2", X, "auto", {"model": "fixed_qty", "qty": 60.0}, None),
    ]
    d = Driver(*make_core(fixed, risk, 10_000.0), 10_000.0)
    d.quote(X, 100.0)
    d.say("s1", Action.BUY, LimitSpec(offset_ticks=0.0))  # joins the bid at 99.95
    d.quote(X, 100.0, bid_size=1_000.0)  # 1,000 ahead of it in the queue
    d.quote(X, 100.0)
    assert d.core.open_buy_qty[X] == 50.0
    for _ in range(3):  # the market falls through it; little trades, the queue is long
        d.quote(X, 90.0, ask_size=0.5)
    assert d.core.open_buy_qty[X] == 50.0
    ctx = d.core.risk_context(X)
    reserved = 50 * 99.95 * (1 + FEE)
    left = 10_000.0 - reserved
    ok = floor_to_step(left / (90.0 * (1 + FEE)), 0.001)
    fits = OrderIntent("i", "d", "s2", X, "sim", Side.BUY, ok, OrderType.MARKET, 90.0, d.ts)
    assert check_cash(fits, ctx, d.core.limits).ok
    over = check_cash(replace(fits, qty=round(ok + 0.001, 3)), ctx, d.core.limits)
    assert not over.ok and over.code == "INSUFFICIENT_CASH"
    assert "5,002.50 reserved for open buys" in over.message
    # End to end: s2's market buy (59.88 after sizing) no longer spends the limit's cash.
    d.say("s2", Action.BUY)
    d.quote(X, 90.0, ask_size=0.5)
    (checked,) = [e for e in d.intents() if e.intent.strategy_id == "s2"]
    assert checked.outcome == IntentOutcome.DENIED and "INSUFFICIENT_CASH" in checked.denied_codes
    for _ in range(600):  # the queue trades away and the limit fills at 99.95
        d.quote(X, 90.0, ask_size=100.0)
    assert d.core.portfolio.positions[X].qty == 50.0
    assert d.core.portfolio.cash >= 0.0
    assert not d.book.problems, d.book.problems


# --------------------------------------------------------------------------- the property

TIGHT = {  # small limits, so that every one of them binds in a short sequence
    "max_order_notional": 3_000.0,
    "max_position_fraction": 0.05,
    "max_open_positions": 1,
    "max_gross_exposure_fraction": 0.08,
    "price_collar_pct": 2.0,
    "strategy_throttle": {"max_orders": 4, "per_seconds": 60},
    "global_throttle": {"max_orders": 6, "per_seconds": 60},
}
CASH_BOUND = {  # leverage allowed: the cash check is what binds
    "max_order_notional": 1e6,
    "max_position_fraction": 0.8,
    "max_open_positions": 2,
    "max_gross_exposure_fraction": 3.0,
    "price_collar_pct": 5.0,
}
FLEET = [
    ("a1", X, "auto", {"model": "fixed_qty", "qty": 45.0}, None),
    (
        "a2",
        X,
        "approve",
        {"model": "fixed_qty", "qty": 25.0},
        {"stop_loss_pct": 1.0, "take_profit_pct": 1.5},
    ),
    ("b", Y, "auto", {"model": "fixed_fraction", "fraction": 0.04}, None),
    ("c", Y, "approve", {"model": "fixed_qty", "qty": 90.0}, None),
]

quotes = st.tuples(
    st.just("quote"),
    st.sampled_from([X, Y]),
    st.floats(-0.03, 0.03),  # the move
    st.sampled_from([0.01, 0.05, 0.5]),  # half the spread
    st.sampled_from([0.5, 5.0, 100.0]),  # the size shown
    st.sampled_from([50, 500, 5_000, 30_000]),  # ms since the last quote
)
signals = st.tuples(
    st.just("signal"),
    st.sampled_from(["a1", "a2", "b", "c"]),
    st.sampled_from([Action.BUY, Action.SELL]),
    st.sampled_from(["market", "market", "limit", "limit", "exit"]),
    st.sampled_from([-3.0, 0.0, 2.0]),  # a limit's ticks behind the touch
)
approvals = st.tuples(st.just("approve"), st.integers(0, 3))
flattens = st.tuples(st.just("flatten"), st.sampled_from([None, X, Y]))
controls = st.one_of(
    st.tuples(st.just("set_limit"), st.sampled_from([0.01, 0.03, 0.05])),
    st.tuples(st.just("kill"), st.sampled_from(["entries", "halt", "flatten"])),
    st.tuples(st.just("release"), st.just(None)),
    st.tuples(st.just("pause"), st.sampled_from(["a1", "a2", "b", "c"]), st.booleans()),
    st.tuples(st.just("wait"), st.sampled_from([1, 10, 40, 70])),
)
# Signals, quotes and approvals most of the time, flattens, a person's other controls.
steps = st.one_of(signals, signals, signals, quotes, quotes, approvals, flattens, controls)


def play(risk: dict[str, Any], cash: float, script: list[Any], races: int = 0) -> Driver:
    d = Driver(*make_core(FLEET, risk, cash), cash)
    d.races = races  # that many cancels of resting limits lose the race to a fill
    core = d.core
    px = {X: 100.0, Y: 50.0}
    d.quote(X, px[X])
    d.quote(Y, px[Y])
    for step in script:
        kind = step[0]
        if kind == "quote":
            _, sym, move, half, size, dt = step
            px[sym] = max(1.0, px[sym] * (1 + move))
            d.quote(sym, px[sym], half, size, dt)
        elif kind == "signal":
            _, sid, action, how, ticks = step
            limit = LimitSpec(offset_ticks=ticks) if how == "limit" else None
            d.say(sid, action, limit, exit_=how == "exit")
            sym = d.strats[sid].symbol
            d.quote(sym, px[sym], dt_ms=100)
        elif kind == "approve":
            pending = list(core.approvals.pending())
            if pending:
                d.handle(core.approve(pending[step[1] % len(pending)].approval_id, by="t"))
        elif kind == "flatten":
            d.handle(core.flatten(step[1], by="t", reason="t"))
        elif kind == "set_limit":
            lowered = step[1] < core.limits.max_position_fraction
            set_limit(d, "max_position_fraction", step[1])
            if lowered:  # (the same or a looser limit re-judges nothing: a price that moved
                # since an order was placed may take what rests past an unchanged limit)
                d.book.resting_within(f"max_position_fraction lowered to {step[1]}")
        elif kind == "release":
            core.safety.release(by="t", reason="t", ts=core.now)
        elif kind == "kill":
            d.handle(core.kill(step[1], by="t", reason="t", source="operator"))
        elif kind == "pause" and step[2]:
            d.handle(core.pause_strategy(step[1], by="t", reason="t", ts=core.now))
        elif kind == "pause":
            core.safety.resume(step[1], by="t", reason="t", ts=core.now)
        elif kind == "wait":
            d.ts += step[1] * NS_PER_SECOND
            d.handle(core.tick(d.ts))
        if core.safety.trading_state is TradingState.REDUCING:
            d.book.nothing_rests_that_could_add("kill switch at entries")
        for sid in d.strats:
            if core.safety.is_paused(sid):
                d.book.paused_adds_nothing(sid)
        assert not d.book.problems, (d.book.problems, step)
    return d


# Found by the property in CI: two sell limits rest on a flat Y/USDT; a lowered max position
# cancels the newer (90) and keeps the older (8), judged as if the 90 were gone; the 90's cancel
# loses the race to a fill, and the 8 would take the short to 98 (4,900 of a 500 limit).
RACED_LIMIT_CANCEL = [
    ("signal", "a1", Action.BUY, "market", -3.0),
    ("signal", "b", Action.SELL, "limit", -3.0),
    ("signal", "c", Action.SELL, "limit", -3.0),
    ("approve", 0),
    ("approve", 0),
    ("approve", 0),
    ("set_limit", 0.05),
    ("signal", "a1", Action.BUY, "market", -3.0),
    ("signal", "a1", Action.BUY, "market", -3.0),
    ("release", None),
]

# The kill switch's version (the property did not reach it in 3,000 examples): a1 long 45 rests
# a sell of 45 to close, a2 a sell of 25 to go short; at entries the 25 is cancelled, its cancel
# loses the race, and the 45 kept would leave a short of 25 under the switch.
RACED_KILL_CANCEL = [
    ("signal", "a1", Action.BUY, "market", 0.0),
    ("signal", "a1", Action.SELL, "limit", -3.0),
    ("signal", "a2", Action.SELL, "limit", -3.0),
    ("approve", 0),
    ("kill", "entries"),
    ("quote", X, 0.01, 0.05, 100.0, 500),
]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@example("cash", RACED_LIMIT_CANCEL, 1)
@example("cash", RACED_KILL_CANCEL, 1)
@given(
    st.sampled_from(["tight", "cash"]),
    st.lists(steps, min_size=10, max_size=50),
    st.sampled_from([0, 0, 1, 1_000]),
)
def test_property_what_is_filled_plus_what_rests_stays_within_the_limits(
    which: str, script: list[Any], races: int
) -> None:
    """Random signals (market, limit, exit) of four strategies on two symbols, approvals in any
    order, quotes that move and thin out, flattens, kills and releases, pauses, a limit
    lowered at run time, time passing, cancels that lose the race to a fill (as on a venue):
    every order the paper venue is handed is judged on the venue's book (its open orders and
    the fills, not the core's view). An order that adds to the worst case stays within max
    order notional, max position, gross exposure, max open positions and the cash left after
    every open buy at what it may cost; a reduce-only order never exceeds the position less
    what already closes it, and no reduce-only fill flips a position; no order goes out
    beyond the order rate; once a limit is lowered, what rests adds nothing beyond it."""
    risk, cash = (TIGHT, 100_000.0) if which == "tight" else (CASH_BOUND, 10_000.0)
    play(risk, cash, script, races)


def test_a_lowered_limit_whose_cancel_loses_the_race_judges_what_it_kept_again() -> None:
    """Found (by the property, in CI): a lowered limit cancelled the newer of two resting sell
    limits and kept the older, judged as if the newer were gone; the cancel lost the race to a
    fill and the kept order stayed working beyond the limit (a short of 98 under a 500 cap at
    50). A fill answering such a cancel now has what was kept judged again, and cancelled."""
    d = play(CASH_BOUND, 10_000.0, RACED_LIMIT_CANCEL, 1)  # judges each order on the venue
    assert d.core.portfolio.positions[Y].qty == -90.0  # the cancelled 90 filled
    kept = [
        e.order
        for e in d.events
        if isinstance(e, OrderUpdated) and e.order.symbol == Y and e.order.qty == 8.0
    ]
    assert kept[-1].status is OrderStatus.CANCELED
    assert "lost the race to a fill" in kept[-1].reason
    assert "exceeds max position" in kept[-1].reason


def long_ten_and_a_resting_sell_of_eight(c_qty: float = 5.0) -> Driver:
    """a holds a long 10 X; b (another strategy) rests a sell limit of 8 at the ask, behind a
    long queue: it closes most of the position and is kept under a kill switch at entries;
    c sells ``c_qty`` when told."""
    fleet = [
        ("a", X, "auto", {"model": "fixed_qty", "qty": 10.0}, None),
        ("b", X, "auto", {"model": "fixed_qty", "qty": 8.0}, None),
        ("c", X, "auto", {"model": "fixed_qty", "qty": c_qty}, None),
    ]
    risk = {
        "max_order_notional": 1e6,
        "max_position_fraction": 1.0,
        "max_gross_exposure_fraction": 10.0,
        "max_open_positions": 5,
        "price_collar_pct": 5.0,
    }
    d = Driver(*make_core(fleet, risk, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("a", Action.BUY)
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    d.say("b", Action.SELL, LimitSpec(offset_ticks=0.0))
    d.quote(X, 100.0, ask_size=1_000.0)
    d.quote(X, 100.0, ask_size=1_000.0)
    assert d.core.portfolio.positions[X].qty == 10.0
    return d


def run_into_the_resting_sells(d: Driver) -> list[float]:
    """The market rises through the resting sells with size to spare: every position on the way."""
    seen = []
    for _ in range(800):
        d.quote(X, 101.0, bid_size=100.0)
        seen.append(d.core.portfolio.positions[X].qty)
    return seen


def test_a_kill_switch_cancel_that_loses_the_race_does_not_leave_a_flip_working() -> None:
    """Found: under the kill switch at entries a closing limit within the position is kept and
    one beyond it cancelled, judged as if the cancelled one were gone. When that cancel lost
    the race to a fill (long 10: sells of 8 kept, 5 cancelled but filled), the kept 8 went on
    working and filled into a short of 3 under the switch. A fill answering such a cancel now
    has what was kept judged again: the 8 is cancelled, the long 5 is left, nothing flips."""
    d = long_ten_and_a_resting_sell_of_eight()
    d.say("c", Action.SELL, LimitSpec(offset_ticks=0.0))
    d.quote(X, 100.0, ask_size=1_000.0)
    d.quote(X, 100.0, ask_size=1_000.0)
    assert sorted(o.remaining for o in d.core.open_orders.values()) == [5.0, 8.0]
    d.races = 1  # the cancel of the 5 loses the race
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    assert d.core.portfolio.positions[X].qty == 5.0
    assert not d.core.open_orders
    (kept,) = [
        e.order
        for e in d.events
        if isinstance(e, OrderUpdated) and e.order.strategy_id == "b" and e.order.status.is_terminal
    ]
    assert kept.status is OrderStatus.CANCELED and "lost the race to a fill" in kept.reason
    assert min(run_into_the_resting_sells(d)) == 5.0


def test_a_kill_switch_counts_a_closing_market_order_in_flight_before_keeping_a_limit() -> None:
    """Found: the kill switch at entries kept a closing limit when it fitted the position, not
    counting a closing market order in flight (another strategy's, sent just before the
    kill): long 10, a sell of 8 resting, a market sell of 5 in flight; the 5 filled, then the
    8, a short of 3 under the switch. What closes the position anyway (market orders in
    flight, reduce-only orders, limits being cancelled) now comes off the room first."""
    d = long_ten_and_a_resting_sell_of_eight()
    d.say("c", Action.SELL)
    d.quote(X, 100.0, ask_size=1_000.0)  # c's market sell is submitted; the venue has it
    assert sorted(o.remaining for o in d.core.open_orders.values()) == [5.0, 8.0]
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    seen = run_into_the_resting_sells(d)
    assert min(seen) == seen[-1] == 5.0
    assert not d.core.open_orders


def test_a_kill_switch_keeps_a_closing_limit_exactly_within_what_is_left() -> None:
    """The boundary of the same room: long 10, a market sell of 2 in flight, a resting sell of
    8: exactly what is left, kept (it closes the position to flat, never past it)."""
    d = long_ten_and_a_resting_sell_of_eight(c_qty=2.0)
    d.say("c", Action.SELL)
    d.quote(X, 100.0, ask_size=1_000.0)
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    assert sorted(o.remaining for o in d.core.open_orders.values()) == [2.0, 8.0]
    assert run_into_the_resting_sells(d)[-1] == 0.0


# --------------------------------------------------------------------------- lowered limits


def resting_buy(risk: dict[str, Any]) -> Driver:
    """a1 rests a buy limit of 40 X at 99.95 (4,000 at the mid of 100: 4% of equity); b, on
    Y, has done nothing yet."""
    fleet = [
        ("a1", X, "auto", {"model": "fixed_qty", "qty": 40.0}, None),
        ("b", Y, "auto", {"model": "fixed_qty", "qty": 10.0}, None),
    ]
    d = Driver(*make_core(fleet, risk, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("a1", Action.BUY, LimitSpec(offset_ticks=0.0))
    d.quote(X, 100.0, bid_size=1_000.0)  # a long queue ahead: it rests
    d.quote(X, 100.0)
    assert d.core.open_buy_qty[X] == 40.0
    return d


def set_limit(d: Driver, name: str, value: float) -> Any:
    result = execute(
        d.core, "set_limit", SetLimitArgs(name=name, value=value, reason="t"), by="op", client=""
    )
    assert result.ok, result.message
    d.handle(result.events)
    return result


def test_a_limit_lowered_at_run_time_cancels_the_resting_orders_beyond_it() -> None:
    """Found: set_limit lowered max_position_fraction (or max order notional, gross exposure,
    max open positions) below what a resting buy limit would make the book, and the limit
    kept working: its fill took the position beyond the new limit, no order denied. A lower
    limit now judges what rests as a new order: an order exactly at the new limit stays, one
    beyond it is cancelled on the record with the reason, and the reply says so."""
    risk = {"max_position_fraction": 0.05}
    d = resting_buy(risk)
    result = set_limit(d, "max_position_fraction", 0.04)  # 40 x 100 = 4,000: at the limit
    assert "cancelled" not in result.message
    assert d.core.open_buy_qty[X] == 40.0
    result = set_limit(d, "max_position_fraction", 0.0399)  # 3,990: one order beyond it
    assert result.message.endswith("1 resting order(s) beyond it cancelled"), result.message
    assert d.core.open_buy_qty.get(X, 0.0) == 0.0 and not d.broker.open_orders()
    (cancel,) = [e for e in result.events if type(e) is CancelOrder]
    assert "max_position_fraction lowered to 0.0399 by op" in cancel.reason
    assert "exceeds max position 3,990.00" in cancel.reason
    for name, value in (("max_order_notional", 3_990.0), ("max_gross_exposure_fraction", 0.0399)):
        d = resting_buy(risk)
        set_limit(d, name, value)
        assert d.core.open_buy_qty.get(X, 0.0) == 0.0, name
    # A resting entry in a second symbol is beyond max open positions lowered to 1.
    d = resting_buy(risk)
    d.quote(Y, 50.0)
    d.say("b", Action.BUY)
    d.quote(Y, 50.0)
    d.quote(Y, 50.0)  # b's market buy filled: Y is held
    assert d.core.portfolio.positions[Y].qty == 10.0
    set_limit(d, "max_open_positions", 2)
    assert d.core.open_buy_qty[X] == 40.0
    set_limit(d, "max_open_positions", 1)
    assert d.core.open_buy_qty.get(X, 0.0) == 0.0
    # A looser limit, or one that is not about exposure, leaves the order alone.
    d = resting_buy(risk)
    set_limit(d, "max_position_fraction", 0.06)
    set_limit(d, "price_collar_pct", 0.5)
    assert d.core.open_buy_qty[X] == 40.0
    # So does every limit for a close resting within the position: it only shrinks the book.
    d = resting_buy(risk)
    d.quote(X, 99.0, half=0.5, ask_size=1_000.0)  # trades through the bid: it fills
    assert d.core.portfolio.positions[X].qty == 40.0
    d.say("a1", Action.SELL, LimitSpec(price=100.5))
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    assert d.core.open_sell_qty[X] == 40.0
    set_limit(d, "max_order_notional", 1_000.0)
    set_limit(d, "max_position_fraction", 0.001)
    assert d.core.open_sell_qty[X] == 40.0


async def test_a_restart_under_a_lower_limit_cancels_what_rests_beyond_it_and_only_reduces(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: a restart with a lower max_position_fraction in the config kept a buy limit
    resting from before, beyond the new limit (it filled the position past it). The limits a
    start brings hold for what rests, as set_limit's do at run time: the order beyond them is
    cancelled at start, with the reason; the position held beyond the new limit stays, an
    entry sizes to nothing, an order that shrinks it goes out."""
    risk = {"max_position_fraction": 0.02, "price_collar_pct": 2.0}  # 2,000 of 100,000
    cfg = scripted_config(data_dir, strategies=[engine_strategy("alpha", "auto")], risk=risk)
    h = await engine_start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, engine_buy(), 60_000.0)  # 0.01 BTC: 600
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.01
    bid = Signal(Action.BUY, "scripted", "bid below", 1.0, limit=LimitSpec(price=59_500.0))
    await h.signal("alpha", BTC, bid, 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.core.open_buy_qty[BTC] == 0.01  # worst case 0.02 BTC: 1,200 of 2,000
    await h.stop()
    harnesses.remove(h)
    lower = {**risk, "max_position_fraction": 0.005}  # 500: below what is held (600)
    cfg = scripted_config(data_dir, strategies=[engine_strategy("alpha", "auto")], risk=lower)
    h = await engine_start(harnesses, data_dir, cfg)
    assert h.core.open_buy_qty.get(BTC, 0.0) == 0.0, "the bid beyond the new limit still rests"
    await h.engine.journal.flush()
    (gone,) = [
        r.payload["order"] for r in h.rows("order") if r.payload["order"]["status"] == "canceled"
    ]
    assert "limits in force at start" in gone["reason"], gone
    assert "exceeds max position 500.00" in gone["reason"], gone
    await h.signal("alpha", BTC, engine_buy("more"), 60_000.0)
    more = h.intents()[-1]  # sized within the limit: no room left, nothing to propose
    assert more["outcome"] == "denied" and engine_denied(more) == ["SIZE_ZERO"], more
    await h.signal("alpha", BTC, engine_sell("less"), 60_000.0)
    assert h.intents()[-1]["outcome"] == "submitted"


# --------------------------------------------------------------------------- flatten


def test_a_flatten_whose_cancel_lost_the_race_to_a_fill_is_not_sent_to_flip_the_position() -> None:
    """Found: an operator's flatten cancels the orders resting on the closing side and sizes
    its reduce-only close as if they were gone. On a venue the resting sell can fill before
    the cancel gets there; the cancel's answer is then the fill, the position is smaller, and
    the close, sized for the whole position, still went out (ACTIVE asked nothing at the
    send): a long of 10 became a short of 4. At the send a reduce-only order is now judged
    against the book as it is (as HALTED and REDUCING already did): larger than what it can
    reduce, it is not sent, on the record; nothing flips."""
    fleet = [
        ("a1", X, "auto", {"model": "fixed_qty", "qty": 10.0}, None),
        ("a2", X, "auto", {"model": "fixed_qty", "qty": 4.0}, None),
    ]
    d = Driver(*make_core(fleet, {"price_collar_pct": 2.0}, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("a1", Action.BUY)
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    assert d.core.portfolio.positions[X].qty == 10.0
    d.say("a2", Action.SELL, LimitSpec(price=100.5))  # another strategy offers 4 above
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    (offer,) = d.broker.open_orders()
    assert (offer.side, offer.remaining) == (Side.SELL, 4.0)
    cancel = d.broker.cancel

    def filled_before_the_cancel(coid: str, now: int, reason: str = "") -> list[Any]:
        if coid != offer.client_order_id:
            return cancel(coid, now, reason)
        (order,) = [o for o in d.broker.open_orders() if o.client_order_id == coid]
        cancel(coid, now, reason)  # off the book: it traded
        order.filled_qty, order.avg_fill_price = order.qty, 100.5
        order.move_to(OrderStatus.FILLED, now)
        fill = Fill("f-race", coid, "a2", X, "sim", Side.SELL, 4.0, 100.5, 0.0, None, now)
        return [fill, OrderUpdate(order, now)]

    d.broker.cancel = filled_before_the_cancel  # type: ignore[method-assign]
    d.handle(d.core.flatten(X, by="op", reason="t"))
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    assert d.core.portfolio.positions[X].qty == 6.0, "the flatten flipped the position"
    assert not d.book.problems, d.book.problems
    (unsent,) = [
        e.order
        for e in d.events
        if type(e) is OrderUpdated and e.order.status is OrderStatus.REJECTED
    ]
    assert unsent.reduce_only and unsent.reason.startswith("not sent: reduce-only"), unsent


async def test_the_flatten_command_says_when_its_close_was_not_sent(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The same race through the engine and its command: the close not sent at the send-time
    gate is answered as such (ok false, the reason), never as "1 order(s) submitted"."""
    strategies = [engine_strategy("alpha", "auto"), engine_strategy("gamma", "auto")]
    cfg = scripted_config(data_dir, strategies=strategies, risk={"price_collar_pct": 2.0})
    h = await engine_start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, engine_buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.01
    offer = Signal(Action.SELL, "scripted", "offer", 1.0, limit=LimitSpec(price=60_300.0))
    await h.signal("gamma", BTC, offer, 60_000.0)
    await h.feed(BTC, 60_000.0)
    paper = h.engine.execution.paper
    assert len(paper.open_orders()) == 1  # the offer rests
    cancel = paper.cancel

    def filled_before_the_cancel(
        coid: str, now: int, reason: str = "", market: Any = None
    ) -> list[Any]:
        (order,) = [o for o in paper.open_orders() if o.client_order_id == coid]
        cancel(coid, now, reason)
        order.filled_qty, order.avg_fill_price = order.qty, 60_300.0
        order.move_to(OrderStatus.FILLED, now)
        fill = Fill(
            "f-race", coid, "gamma", BTC, "sim", Side.SELL, order.qty, 60_300.0, 0.0, None, now
        )
        return [fill, OrderUpdate(order, now)]

    paper.cancel = filled_before_the_cancel  # type: ignore[method-assign]
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "square"})
    assert not reply["ok"] and "not sent: reduce-only" in reply["message"], reply
    assert h.core.portfolio.positions[BTC].qty >= 0.0


# --------------------------------------------------------------------------- held: sizing


def test_sizing_from_an_equity_that_is_gone_or_unusable_sends_nothing() -> None:
    """Held: equity at 0, below 0, NaN or a billionth sizes every model to nothing (fixed_qty
    too: its size is capped by the position limit, a fraction of that equity); denied as
    SIZE_ZERO, nothing reaches the venue."""
    for equity in (0.0, -1_000.0, float("nan"), 1e-9):
        d = Driver(*make_core(FLEET, TIGHT, 100_000.0), 100_000.0)
        d.quote(X, 100.0)
        d.quote(Y, 50.0)
        d.core.portfolio._cash = equity  # flat: the equity is the cash
        for sid in ("a1", "b"):
            d.say(sid, Action.BUY)
            d.quote(d.strats[sid].symbol, 100.0 if sid == "a1" else 50.0)
        assert [list(e.denied_codes) for e in d.intents()] == [["SIZE_ZERO"]] * 2, equity
        assert not d.broker.open_orders() and not d.book.sent, equity
