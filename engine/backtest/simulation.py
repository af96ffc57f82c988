"""The backtest loop: the live engine's core, paper broker and portfolio driven over the data.

``BacktestRun`` builds the very objects the live engine builds and drives them as
``engine.runtime.Engine.process`` does, minus the journal (see the package docstring).

Fill models (``BacktestOptions.fill``):

* ``live`` (default): exactly the live paper engine. Each market event goes to the core, then the
  resulting orders to the broker, then the event's quote to the broker (bars: the core's synthetic
  close quote). An order executes on the first quote at or after its arrival (submit time + the
  configured log-normal latency), at the far side with impact beyond the displayed size. On bar
  data that is the *next* bar's close; on quote data the next quote after the latency.
* ``close``: the signal bar's close. The order executes right after it is submitted, against a
  quote at the signal bar's close price, stamped at the broker's arrival time (the backtest config
  sets the broker's latency to its 1 ns minimum, so fills are stamped 1 ns after the close). On
  quote data the "close" quote is the last quote of the bar that closed (the bar closes on the
  first quote past its end; its close is the mid of the quote before). Only a strategy's bar
  orders go there: a protective exit or a quote-driven strategy's order executes against the
  quote it was decided on (the one before is from before the decision; a stop through a gap
  would have filled above the stop).
* ``next-open``: the next bar's open. Orders submitted on bar ``i`` execute against a quote at
  bar ``i+1``'s open, stamped at ``max(bar i+1 open time, arrival)``, before bar ``i+1`` is
  processed; its displayed size is bar ``i``'s (bar ``i+1``'s volume is not known at its
  open). On quote data the next bar opens with the very quote that closed the signal bar, so
  the order executes against that quote.

Slippage (``BacktestOptions.slippage``): ``model`` uses the paper broker's model on the execution
quote (far side of the spread, ``impact_bps_per_size`` per impact level walked, each level the
displayed size or ``impact_level_notional`` worth, whichever is more); bar data has no
spread, so the synthetic bar quote is zero-spread unless ``spread_bps`` widens it, and its
displayed size is the bar's volume / close (as the core's). ``none`` executes against a
zero-spread quote at the reference price (mid / bar price) with an unlimited displayed size and
the config's impact set to 0: fills at exactly the reference price.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np

from engine.backtest.data import MarketData
from engine.backtest.errors import BacktestError
from engine.backtest.options import BacktestOptions
from engine.breakers import BreakerBoard, BreakerChange
from engine.config import Config, ConfigError
from engine.core import BarBuilder, CancelOrder, EngineCore, SubmitOrder
from engine.events import (
    BreakerChanged,
    DecisionMade,
    EngineEvent,
    FillReceived,
    IntentChecked,
    MarksRecorded,
    OrderUpdated,
    SafetyChanged,
)
from engine.marketdata.columns import CHUNK_ROWS
from engine.marketdata.validate import QuoteValidator
from engine.paper_broker import DEPTH_EXHAUSTED, PaperBroker
from engine.portfolio import Portfolio
from engine.strategies.base import Strategy
from engine.strategies.registry import build_strategies
from engine.types import (
    NS_PER_SECOND,
    Bar,
    BarSeries,
    Fill,
    Instrument,
    Liquidity,
    OrderUpdate,
    Quote,
    Side,
)
from engine.vocabulary import IntentOrigin, IntentOutcome

VENUE = "replay"  # as the live engine's replay sources
SESSION = 1  # a fresh live engine's first session: same intent and fill ids
# Displayed size of a "no slippage" execution quote: no order walks past the touch.
UNLIMITED_SIZE = 1e30
_BUY = Side.BUY
_DENIED = IntentOutcome.DENIED  # (a module global: ~10x cheaper than the enum's attribute)
_FROM_STRATEGY = IntentOrigin.STRATEGY
CHUNK = CHUNK_ROWS  # rows fed to the core at once; progress and cancel checks between


# ------------------------------------------------------------------ breakers off


class DisabledBreakers(BreakerBoard):
    """``--no-breakers``: the same board, but no observation ever trips anything."""

    def on_round_trip(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_order_submitted(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_signal(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_order_rejected(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_order_accepted(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_fill_slippage(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_fill(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def reviewed(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_quote(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_clock(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def on_clock_drift(self, *a: Any, **k: Any) -> list[BreakerChange]:
        return []

    def blocked(
        self, strategy_id: str, symbol: str, closes_own: Callable[[], bool] | None = None
    ) -> str | None:
        return None

    def quiet_until(self, symbol: str, ts: int) -> int:
        return (1 << 63) - 1

    def advance(self, symbol: str, ts: int) -> None:
        return None


# ------------------------------------------------------------------ the run


class RunCancelled(Exception):
    pass


class BacktestRun:
    """One backtest: the core, the broker and the portfolio driven as the live engine does."""

    # The core's trace (the cockpit's recent decisions) holds this many events. Nobody reads
    # it in a backtest: the report is built from the events ``handle`` sees. Kept, its last
    # 2,000 events each outlive a few collections of the cyclic GC (~6% of a run's time).
    trace_size = 0

    def __init__(
        self,
        cfg: Config,
        opts: BacktestOptions,
        instruments: dict[str, Instrument] | None = None,
    ) -> None:
        """``instruments``: every traded symbol's (a whole-config run has several); None: the
        config's replay symbol, else its simulated market's symbols."""
        self.cfg = cfg
        self.opts = opts
        try:
            strategies = build_strategies(cfg.strategies)
        except ConfigError as exc:
            raise BacktestError([f"config error: {p}" for p in exc.problems]) from None
        if not strategies:
            raise BacktestError("nothing to backtest: the config has no enabled strategy")
        self.symbol = strategies[0].symbol
        # Decides on quotes as well as bars: ``close`` fills its orders on the quote they came on.
        self.quote_driven = any(type(s).on_quote is not Strategy.on_quote for s in strategies)
        self.bar_ns = sorted({s.timeframe_s * NS_PER_SECOND for s in cfg.strategies})
        self.instruments = instruments or _instruments(cfg)
        venue = next(iter(self.instruments.values())).venue
        self.venue = venue
        self.broker = broker = PaperBroker(cfg.paper, venue=venue)
        self.portfolio = Portfolio(cfg.portfolio.starting_cash, cfg.portfolio.quote_currency)
        self.core = core = EngineCore(
            cfg,
            strategies,
            self.instruments,
            self.portfolio,
            session=SESSION,
            fee_rate=broker.fee_rate(Liquidity.TAKER),
            slippage_model=broker.expected_slippage_bps,
            marks_every_s=86_400.0,  # the backtest samples equity itself, on every bar
        )
        core.strategy_errors = "raise"  # a strategy's bug ends the run, saying where
        if not opts.breakers:
            core.breakers = DisabledBreakers(cfg)
        core.trace = deque(maxlen=self.trace_size)
        self.none = opts.slippage == "none"
        self.half_spread = opts.spread_bps / 20_000.0
        self.cancel_meets_quote = opts.fill == "live" and not self.none and not self.half_spread
        self.ref = 0.0
        self.fills: list[Fill] = []
        self.refs: list[float] = []
        self.realized: list[float] = []
        self.positions: list[float] = []
        self.denied: Counter[str] = Counter()
        self.notable: list[EngineEvent] = []
        # Orders the displayed size (a bar's volume, a quote's size) did not cover on the quote
        # they executed against, their fills, and those cut short ("exceeds simulated depth").
        self.capped_orders = 0
        self.capped_fills = 0
        self.depth_exhausted = 0

    # -------------------------------------------------------------- the runtime's order path

    def handle(self, items: list[Any]) -> None:
        """What ``Engine._handle`` does, with the journal replaced by collecting events."""
        for item in items:
            kind = type(item)
            if kind is DecisionMade or kind is OrderUpdated or kind is MarksRecorded:
                continue  # journaled only (the commonest events first)
            if kind is SubmitOrder:
                self.submit(item)
            elif kind is IntentChecked:
                if item.outcome == _DENIED:
                    for code in item.denied_codes:
                        self.denied[code] += 1
            elif kind is FillReceived:
                self.fills.append(item.fill)
                self.refs.append(self.ref)
                self.realized.append(item.realized_pnl)
                self.positions.append(item.position_qty)
            elif kind is CancelOrder:
                self.cancel(item)
            elif kind is BreakerChanged or kind is SafetyChanged:
                self.notable.append(item)

    def submit(self, sub: SubmitOrder) -> None:
        """``Engine._submit`` without the journal flush: gate again, then the broker."""
        core = self.core
        refused = core.refused_at_send(sub)
        if refused is not None:
            self.handle(refused)
            return
        self.handle(core.on_broker(self.broker.submit(sub.order, core.now)))

    def cancel(self, cancel: CancelOrder) -> None:
        # The order meets the quote the cancel was decided on where that quote is the one the
        # fill model shows (``live``, not ``none``, no widened spread; see PaperBroker.cancel).
        market = self.core.quotes if self.cancel_meets_quote else None
        updates = self.broker.cancel(cancel.client_order_id, self.core.now, cancel.reason, market)
        for update in updates:
            if type(update) is OrderUpdate and not update.order.reason:
                update.order.reason = cancel.reason
        if updates:
            self.handle(self.core.on_broker(updates))

    def execute(
        self, q: Quote, ref: float, only: set[str] | None = None, again: int | None = None
    ) -> None:
        """Show the broker one quote; its fills go to the core (``ref``: the reference mid;
        ``only``: the orders it is for, see ``PaperBroker.on_quote``; ``again``: ``q`` was shown
        before and is shown again at this time, see ``PaperBroker.on_quote_again``)."""
        if again is None:
            items = self.broker.on_quote(q, only)
        else:
            items = self.broker.on_quote_again(q, again, only)
        if items:
            self.ref = ref
            if (
                len(items) == 2
                and type(items[0]) is Fill
                and type(items[1]) is OrderUpdate
                and items[1].order.reason != DEPTH_EXHAUSTED
            ):
                # One fill and its order's update (the usual execution): _count_capped's
                # count in short. The order took all the quote showed on its side, or not.
                fill = items[0]
                if fill.qty >= (q.ask_size if fill.side is _BUY else q.bid_size) * (1.0 - 1e-9):
                    self.capped_orders += 1
                    self.capped_fills += 1
            else:
                self._count_capped(q, items)
            self.handle(self.core.on_broker(items))

    def _count_capped(self, q: Quote, items: list[Any]) -> None:
        """Count the orders that took all the quote displayed on their side (the volume
        capped them: the rest walked the impact levels or was cut) and their fills."""
        taken: dict[str, list[Any]] = {}
        for item in items:
            if type(item) is Fill:
                row = taken.get(item.client_order_id)
                if row is None:
                    taken[item.client_order_id] = [item.side is Side.BUY, item.qty, 1]
                else:
                    row[1] += item.qty
                    row[2] += 1
            elif item.order.reason == DEPTH_EXHAUSTED:
                self.depth_exhausted += 1
                taken.setdefault(item.order.client_order_id, [True, math.inf, 0])
        for buy, qty, fills in taken.values():
            shown = q.ask_size if buy else q.bid_size
            if qty >= shown * (1.0 - 1e-9):
                self.capped_orders += 1
                self.capped_fills += fills

    # -------------------------------------------------------------- execution quotes

    def bar_quote(self, price: float, size: float, ts: int) -> Quote:
        """A quote at a bar price: zero spread (or ``spread_bps``), the bar's displayed size."""
        if self.none:
            return Quote(
                self.symbol, price, price, UNLIMITED_SIZE, UNLIMITED_SIZE, ts, ts, self.venue
            )
        h = price * self.half_spread
        return Quote(self.symbol, price - h, price + h, size, size, ts, ts, self.venue)

    def quote_at(self, q: Quote, ts: int) -> Quote:
        """The market quote ``q`` as the execution quote at ``ts`` (mid and unlimited: none)."""
        if self.none:
            mid = (q.bid + q.ask) * 0.5
            return Quote(q.symbol, mid, mid, UNLIMITED_SIZE, UNLIMITED_SIZE, ts, ts, q.venue)
        if ts == q.ts_exchange:
            return q
        return Quote(q.symbol, q.bid, q.ask, q.bid_size, q.ask_size, ts, ts, q.venue)

    def arrival(self) -> int:
        """When every open order has reached the venue (at least 1 ns after now)."""
        t = self.core.now + 1
        for coid in self.core.open_orders:
            a = self.broker.arrival_time(coid)
            if a is not None and a > t:
                t = a
        return t

    # -------------------------------------------------------------- drivers

    def run_bars(
        self,
        data: MarketData,
        tf: int,
        progress: Callable[[int, int], None] | None,
        cancel: Any,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
        """Runs of quiet bars go through ``core.on_bars`` (no objects per bar); a bar where
        anything may happen, and every bar while an order is open, through ``step``."""
        core, p = self.core, self.portfolio
        sym, venue = self.symbol, self.venue
        for strat in self.cfg.strategies:
            if strat.timeframe_s != tf:
                raise BacktestError(
                    f"strategy {strat.id} trades {strat.timeframe_s} s bars but the data has "
                    f"{tf} s bars"
                )
        n = len(data)
        wu = min(self.opts.warmup, n)
        tf_ns = tf * NS_PER_SECOND
        if wu:
            check = core.validator.check_bar
            w_ts, (w_o, w_h, w_l, w_c, w_v) = data.chunk(0, wu)
            history = [
                b
                for b in map(
                    Bar,
                    repeat(sym, wu),
                    w_ts,
                    repeat(tf, wu),
                    w_o,
                    w_h,
                    w_l,
                    w_c,
                    w_v,
                    repeat(venue, wu),
                )
                if check(b) is None
            ]
            del w_ts, w_o, w_h, w_l, w_c, w_v
            core.warm_up(history)
            del history
        # The curves: one sample at the start, then one per bar, gathered a chunk at a time in
        # lists (what the core appends to) and moved into arrays: 16 bytes a bar in all.
        # Samples: the start (the first traded bar's open), then each bar's close.
        ts = np.empty(n - wu + 1, dtype=np.int64)
        ts[0] = data.chunk_arrays(wu, wu + 1)[0][0] if wu < n else (data.last_ts or 0)
        eq_all = np.empty(n - wu + 1, dtype=np.float64)
        pos_all = np.empty(n - wu + 1, dtype=np.float64)
        filled = 0
        eq: list[float] = [p.equity]
        pos: list[float] = [0.0]
        on_bars = core.on_bars
        open_orders = core.open_orders
        after_bar = self.after_bar
        step = self.step
        for start in range(wu, n, CHUNK):
            stop = min(n, start + CHUNK)
            # One chunk as plain lists (the core's loops are fastest on those), indexed from 0.
            ts_a, cols_a = data.chunk_arrays(start, stop)
            np.add(ts_a, tf_ns, out=ts[start - wu + 1 : stop - wu + 1])  # each bar's close
            ts_l = ts_a.tolist()
            o_l, h_l, l_l, c_l, v_l = (c.tolist() for c in cols_a)
            series = BarSeries(
                sym, tf, venue, ts_l, o_l, h_l, l_l, c_l, v_l, arrays=(ts_a, *cols_a)
            )
            del ts_a, cols_a
            m = stop - start
            i = 0
            while i < m:
                if not open_orders:
                    k, out = on_bars(series, i, m, eq)
                    if k > i:
                        pos.extend(repeat(p.open_position_count, k - i))
                    if out is not None:
                        after_bar(out, c_l[k], v_l[k])
                        eq.append(p.equity)
                        pos.append(p.open_position_count)
                        i = k + 1
                        continue
                    if k > i:
                        i = k
                        continue
                step(series.bar(i), eq, pos)
                i += 1
            got = len(eq)
            eq_all[filled : filled + got] = eq
            pos_all[filled : filled + got] = pos
            filled += got
            eq.clear()
            pos.clear()
            del series, ts_l, o_l, h_l, l_l, c_l, v_l
            if progress is not None:
                progress(stop - wu, n - wu)
            if cancel is not None and cancel.is_set():
                raise RunCancelled
        if eq:  # no bar after the warm-up: the start sample alone
            eq_all[filled : filled + len(eq)] = eq
            pos_all[filled : filled + len(pos)] = pos
            filled += len(eq)
        assert filled == n - wu + 1
        return ts, eq_all, pos_all, n - wu

    def step(self, bar: Bar, eq: list[float], pos: list[float]) -> None:
        """One bar as the live engine sees it: ``core.on_bar``, the orders, the execution.

        The bar is validated before anything uses it: a rejected bar reaches no fill model
        (its open included); orders in flight wait for the next valid bar.
        """
        core = self.core
        open_orders = core.open_orders
        if core.admit_bar(bar):
            if self.opts.fill == "next-open" and open_orders:
                op = bar.open
                # At the open the bar's own volume is not known yet: the size shown is the
                # last bar's (the core's quote at its close). The whole bar's volume let a
                # crash bar's hundredfold volume make the fill at its open cheap.
                last = core.quotes.get(bar.symbol)
                size = last.ask_size if last is not None else max(bar.volume / op, 1e-9)
                t = max(bar.ts_open, self.arrival())
                if any(0 < o.expire_ts <= t for o in open_orders.values()):
                    # A limit whose time to live ran out before this open (in a gap in the
                    # data: no bar came to expire it) is cancelled first, as the live
                    # engine's clock does between quotes; it filled at the open instead.
                    self.handle(core.expire_orders(t))
                self.execute(self.bar_quote(op, size, t), op)
            if core.exits_armed(bar.symbol):
                self.bar_exits(bar)
            self.after_bar(core.process_bar(bar), bar.close, bar.volume)
        eq.append(self.portfolio.equity)
        pos.append(self.portfolio.open_position_count)

    def bar_exits(self, bar: Bar) -> None:
        """The protective exits the bar's range fires (``Engine._bar_with_exits``): each goes
        out, then meets the core's execution quote at its trigger price (the stop, or the open
        when the bar gapped through it), whatever the fill mode: a stop lives inside the bar."""
        core = self.core
        while True:
            fired = core.bar_exits(bar)
            if not fired:
                return
            self.handle(fired)
            if core.open_orders:
                # The trigger price is the exit's moment alone (see PaperBroker.on_quote).
                exits = {it.order.client_order_id for it in fired if type(it) is SubmitOrder}
                q = core.quotes[self.symbol]
                if not self.none and self.half_spread == 0.0:
                    self.execute(q, q.bid, exits)
                else:
                    self.execute(self.bar_quote(q.bid, q.bid_size, q.ts_exchange), q.bid, exits)

    def after_bar(self, out: list[Any], close: float, volume: float) -> None:
        """What follows ``on_bar``'s result for a bar: the orders, then the fills the fill
        model gives them (signal bar's close, or the bar's quote in ``live``)."""
        open_orders = self.core.open_orders
        mode = self.opts.fill
        if out and (len(out) > 1 or type(out[0]) is not MarksRecorded):
            self.handle(out)
        if mode == "close" and open_orders:
            # Every bar's close, not only a signal bar's: a resting limit met no later bar and
            # expired unfilled, so `--fill close` with limit orders never traded.
            size = max(volume / close, 1e-9)
            self.execute(self.bar_quote(close, size, self.arrival()), close)
        if mode == "live" and open_orders:
            q = self.core.quotes[self.symbol]
            if not self.none and self.half_spread == 0.0:
                self.execute(q, q.bid)
            else:
                self.execute(self.bar_quote(q.bid, q.bid_size, q.ts_exchange), q.bid)

    def run_quotes(
        self,
        data: MarketData,
        progress: Callable[[int, int], None] | None,
        cancel: Any,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
        core, p = self.core, self.portfolio
        sym, venue = self.symbol, self.venue
        n = len(data)
        tfs = sorted({s.timeframe_s for s in self.cfg.strategies})
        tf_ns = tfs[0] * NS_PER_SECOND
        i0 = self._warm_up_quotes(data, tfs) if self.opts.warmup else 0
        eq: list[float] = [p.equity]
        pos: list[float] = [0.0]
        last_ts = data.last_ts or 0
        ts: list[int] = [int(data.chunk_arrays(i0, i0 + 1)[0][0]) if i0 < n else last_ts]
        on_quote = core.on_quote
        handle = self.handle
        quotes = core.quotes
        open_orders = core.open_orders
        mode = self.opts.fill
        live_mode = mode == "live"
        close_mode = mode == "close"
        none = self.none
        next_sample = ts[0] - ts[0] % tf_ns + tf_ns
        done = 0
        prev: Quote | None = None
        for start in range(i0, n, CHUNK):
            stop = min(n, start + CHUNK)
            k = stop - start
            chunk_ts, (bid_l, ask_l, bs_l, as_l) = data.chunk(start, stop)
            feed = map(
                Quote,
                repeat(sym, k),
                bid_l,
                ask_l,
                bs_l,
                as_l,
                chunk_ts,
                chunk_ts,
                repeat(venue, k),
            )
            for q in feed:
                if close_mode:
                    prev = quotes.get(sym)
                out = on_quote(q)
                if out is None:
                    continue
                if out:
                    handle(out)
                    if not live_mode and open_orders:
                        if close_mode and prev is not None and self.bar_orders(out, prev, q):
                            self.close_fill(q, prev, out)
                        else:
                            self.execute(self.quote_at(q, self.arrival()), q.mid)
                elif not live_mode and open_orders:
                    # A resting order meets every later quote (it met only the quotes a
                    # decision came on, so limits in close/next-open mode hardly ever filled).
                    self.execute(self.quote_at(q, q.ts_exchange) if none else q, q.mid)
                if live_mode and open_orders:
                    self.execute(self.quote_at(q, q.ts_exchange) if none else q, q.mid)
                t = q.ts_exchange
                if t >= next_sample:
                    next_sample = t - t % tf_ns + tf_ns
                    ts.append(t)
                    eq.append(p.equity)
                    pos.append(p.open_position_count)
            done += k
            if progress is not None:
                progress(done, n - i0)
            if cancel is not None and cancel.is_set():
                raise RunCancelled
        if n and ts[-1] != last_ts:
            ts.append(last_ts)
            eq.append(p.equity)
            pos.append(p.open_position_count)
        return (
            np.asarray(ts, dtype=np.int64),
            np.asarray(eq, dtype=np.float64),
            np.asarray(pos, dtype=np.float64),
            n - i0,
        )

    def close_fill(self, q: Quote, prev: Quote, out: list[Any]) -> None:
        """``close`` on quote data when ``q`` closed a bar: the bar's orders execute against
        the bar's close (``prev``), from what was left of it after the orders working then
        took their part when it came; those orders meet ``q`` as any later quote. Shown
        ``prev`` again, its displayed size filled them a second time (a buy limit got 8 from
        an ask of 5), the size ahead of them in the queue traded twice, and the bar's orders
        took what the working ones had already taken."""
        sent = {it.order.client_order_id for it in out if type(it) is SubmitOrder}
        t = self.arrival()
        new = {coid for coid in self.core.open_orders if coid in sent}
        if new:
            if self.none:
                self.execute(self.quote_at(prev, t), prev.mid, new)
            else:
                self.execute(prev, prev.mid, new, again=t)
        old = {coid for coid in self.core.open_orders if coid not in sent}
        if old:
            self.execute(self.quote_at(q, t), q.mid, old)

    def bar_orders(self, out: list[Any], prev: Quote, q: Quote) -> bool:
        """Did ``q`` close a bar and every order it brought come from a strategy's bar? Only
        then may ``close`` fill them at the bar's close (the quote before ``q``). An exit, a
        flatten or a quote-driven strategy's order is decided on ``q`` itself: the quote
        before it is a price from before the decision (a stop through a gap filled there
        would beat the stop)."""
        if self.quote_driven:
            return False
        t0, t1 = prev.ts_exchange, q.ts_exchange
        if not any(t0 // tf != t1 // tf for tf in self.bar_ns):
            return False
        return all(type(it) is not SubmitOrder or it.intent.origin == _FROM_STRATEGY for it in out)

    def _warm_up_quotes(self, data: MarketData, tfs: list[int]) -> int:
        """Feed the first ``warmup`` bars (built from quote mids, as the core builds them) to
        the strategies' warm-up; return the index of the first quote to trade on."""
        core = self.core
        sym, venue = self.symbol, self.venue
        builders = [BarBuilder(sym, tf, venue) for tf in tfs]
        primary = builders[0]
        validator = QuoteValidator(self.cfg.market.validation.max_spread_bps)
        history: list[Bar] = []
        done = 0
        n = len(data)
        i = n
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            ts_l, (bid_l, ask_l, bs_l, as_l) = data.chunk(start, stop)
            for j in range(stop - start):
                t = ts_l[j]
                q = Quote(sym, bid_l[j], ask_l[j], bs_l[j], as_l[j], t, t, venue)
                if validator.check(q) is not None:
                    continue
                mid = (q.bid + q.ask) * 0.5
                for b in builders:
                    bar = b.update(q.ts_exchange, mid)
                    if bar is not None:
                        history.append(bar)
                        if b is primary:
                            done += 1
                if done >= self.opts.warmup:
                    i = start + j
                    break
            if i < n:
                break
        history.sort(key=lambda b: b.ts_close)
        core.warm_up(history)
        return i

    def finish(self) -> int:
        """Cancel what is still open when the data ends; return how many there were."""
        left = list(self.core.open_orders)
        for coid in left:
            self.cancel(CancelOrder(coid, "data ended"))
        return len(left)


def _instruments(cfg: Config) -> dict[str, Instrument]:
    rc = cfg.market.replay
    if rc is not None:
        return {
            rc.symbol: Instrument(
                rc.symbol, VENUE, rc.tick_size, rc.lot_size, min_notional=rc.min_notional
            )
        }
    out = {}
    for sym, spec in cfg.market.simulated.symbols.items():
        out[sym] = Instrument(
            sym, VENUE, spec.tick_size, spec.lot_size, spec.min_qty, spec.min_notional
        )
    return out
