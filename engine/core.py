"""The sans-I/O decision pipeline: market event in, events and order submissions out.

Nothing here awaits, reads a clock or touches a file: time is the event's own timestamp, so a
backtest, a replay and the live engine drive exactly the same code. The async runtime around it
journals what it returns and hands submissions to a broker only after the intent is durable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from engine.checks import RiskContext, all_passed, run_checks
from engine.config import Config, StrategyConfig
from engine.events import (
    DecisionMade,
    EngineEvent,
    FillReceived,
    IntentChecked,
    MarksRecorded,
    OrderUpdated,
    QuotesRejected,
)
from engine.indicators import ATR
from engine.marketdata.validate import QuoteValidator
from engine.portfolio import Portfolio
from engine.sizing import size_for
from engine.strategies.base import Strategy
from engine.throttle import OrderThrottle
from engine.types import (
    NS_PER_SECOND,
    Action,
    Bar,
    Decision,
    Fill,
    Instrument,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionView,
    Quote,
    Side,
    Signal,
    Verdict,
)

_EMPTY: list[Any] = []
ATR_PERIOD = 14
MARKS_EVERY_NS = 60 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND


@dataclass(slots=True, frozen=True)
class SubmitOrder:
    """An order the runtime must make durable (the intent row) and then hand to the broker."""

    order: Order
    intent: OrderIntent


class _BarBuilder:
    """Builds time bars from quote mids; a bar closes on the first quote past its end."""

    __slots__ = ("close", "high", "low", "open", "start", "symbol", "tf_ns", "timeframe_s", "venue")

    def __init__(self, symbol: str, timeframe_s: int, venue: str) -> None:
        self.symbol = symbol
        self.timeframe_s = timeframe_s
        self.tf_ns = timeframe_s * NS_PER_SECOND
        self.venue = venue
        self.start = -1
        self.open = self.high = self.low = self.close = 0.0

    def update(self, ts: int, price: float) -> Bar | None:
        start = ts - ts % self.tf_ns
        if start == self.start:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            return None
        done = None
        if self.start >= 0:
            done = Bar(
                self.symbol,
                self.start,
                self.timeframe_s,
                self.open,
                self.high,
                self.low,
                self.close,
                0.0,
                self.venue,
            )
        self.start = start
        self.open = self.high = self.low = self.close = price
        return done


class _StrategySlot:
    """One strategy instance on one symbol, with what the core tracks for it."""

    __slots__ = ("atr", "cfg", "position", "strategy")

    def __init__(self, strategy: Strategy, cfg: StrategyConfig) -> None:
        self.strategy = strategy
        self.cfg = cfg
        self.atr = ATR(ATR_PERIOD)
        self.position = PositionView()


class EngineCore:
    """Validation, marks, bars, strategies, sizing and pre-trade checks for every market event."""

    def __init__(
        self,
        cfg: Config,
        strategies: list[Strategy],
        instruments: dict[str, Instrument],
        portfolio: Portfolio,
        *,
        session: int = 1,
        fee_rate: float = 0.001,
    ) -> None:
        self.cfg = cfg
        self.limits = cfg.risk
        self.instruments = instruments
        self.portfolio = portfolio
        self.session = session
        self.fee_rate = fee_rate
        self.validator = QuoteValidator(cfg.market.validation.max_spread_bps)
        self.throttle = OrderThrottle(cfg.risk.strategy_throttle, cfg.risk.global_throttle)
        self.quotes: dict[str, Quote] = {}
        self.open_orders: dict[str, Order] = {}
        self.open_order_qty: dict[str, float] = {}
        self.now = 0
        # Set when the engine must not trade at all (e.g. the journal cannot write): fail closed.
        self.blocked_reason = ""
        self._decision_seq = 0
        self._order_seq = 0
        self._next_marks_ts = 0
        self._next_day_ts = 0
        self.trace: deque[EngineEvent] = deque(maxlen=cfg.engine.trace_size)
        self.counters = {"decisions": 0, "intents": 0, "denied": 0, "submitted": 0, "fills": 0}

        by_id = {s.id: s for s in cfg.strategies}
        # symbol -> timeframe -> (bar builder, slots)
        self._routes: dict[str, dict[int, tuple[_BarBuilder, list[_StrategySlot]]]] = {}
        self.slots: dict[tuple[str, str], _StrategySlot] = {}
        # Only strategies that override on_quote are called per quote: the hot path stays cheap.
        self._quote_listeners: dict[str, list[_StrategySlot]] = {}
        for strat in strategies:
            scfg = by_id[strat.strategy_id]
            slot = _StrategySlot(strat, scfg)
            self.slots[(strat.strategy_id, strat.symbol)] = slot
            per_symbol = self._routes.setdefault(strat.symbol, {})
            venue = instruments[strat.symbol].venue if strat.symbol in instruments else "sim"
            if scfg.timeframe_s not in per_symbol:
                per_symbol[scfg.timeframe_s] = (
                    _BarBuilder(strat.symbol, scfg.timeframe_s, venue),
                    [],
                )
            per_symbol[scfg.timeframe_s][1].append(slot)
            if type(strat).on_quote is not Strategy.on_quote:
                self._quote_listeners.setdefault(strat.symbol, []).append(slot)

    # ------------------------------------------------------------------ market events

    def warm_up(self, bars: list[Bar]) -> None:
        """Feed history to the strategies' indicators; signals from history never trade."""
        for bar in bars:
            for builder, slots in self._routes.get(bar.symbol, {}).values():
                if builder.timeframe_s != bar.timeframe_s:
                    continue
                for slot in slots:
                    slot.atr.update(bar.high, bar.low, bar.close)
                    slot.strategy.on_bar(bar, slot.position)
            self.portfolio.mark(bar.symbol, bar.close, bar.ts_close)

    def on_quote(self, q: Quote) -> list[Any] | None:
        """Process one quote. Returns None when the quote was rejected at the boundary."""
        code = self.validator.check(q)
        if code is not None:
            total = self.validator.rejected[code]
            # Report the first reject of each kind and then every 1000th, not every quote.
            if total == 1 or total % 1000 == 0:
                ev = QuotesRejected(q.ts_recv, q.symbol, code, dict(self.validator.rejected))
                self.trace.append(ev)
                return [ev]
            return None
        ts = q.ts_exchange
        self.now = ts
        self.quotes[q.symbol] = q
        if ts >= self._next_day_ts:
            self._roll_day(ts)
        self.portfolio.mark(q.symbol, (q.bid + q.ask) * 0.5, ts)
        out = _EMPTY
        if ts >= self._next_marks_ts:
            out = [self._marks_event(ts)]
        mid = (q.bid + q.ask) * 0.5
        listeners = self._quote_listeners.get(q.symbol)
        if listeners is not None:
            for slot in listeners:
                if slot.cfg.enabled:
                    signal = slot.strategy.on_quote(q, slot.position)
                    if signal is not None:
                        produced = self.decide(slot, signal, mid)
                        out = out + produced if out else produced
        routes = self._routes.get(q.symbol)
        if routes is None:
            return out
        for builder, slots in routes.values():
            bar = builder.update(ts, mid)
            if bar is not None:
                produced = self._run_strategies(bar, slots)
                if produced:
                    out = out + produced if out else produced
        return out

    def on_bar(self, bar: Bar) -> list[Any] | None:
        """A bar from a bar feed (replay): mark at the close and run the strategies on it.

        A synthetic quote at the close (zero spread, the bar's volume as displayed size) stands
        in for the book so checks and the paper broker have a reference price.
        """
        code = self.validator.check_bar(bar)
        if code is not None:
            total = self.validator.rejected[code]
            if total == 1 or total % 1000 == 0:
                return [
                    QuotesRejected(bar.ts_close, bar.symbol, code, dict(self.validator.rejected))
                ]
            return None
        ts = bar.ts_close
        self.now = ts
        size = max(bar.volume / bar.close if bar.close > 0 else 0.0, 1e-9) or 1.0
        self.quotes[bar.symbol] = Quote(
            bar.symbol, bar.close, bar.close, size, size, ts, ts, bar.venue
        )
        if ts >= self._next_day_ts:
            self._roll_day(ts)
        self.portfolio.mark(bar.symbol, bar.close, ts)
        out: list[Any] = []
        if ts >= self._next_marks_ts:
            out.append(self._marks_event(ts))
        for _builder, slots in self._routes.get(bar.symbol, {}).values():
            out.extend(self._run_strategies(bar, slots))
        return out

    def _roll_day(self, ts: int) -> None:
        """UTC midnight: the portfolio restarts its day (start-of-day equity for loss limits)."""
        self.portfolio.on_time(ts)
        self._next_day_ts = ts - ts % NS_PER_DAY + NS_PER_DAY

    def _marks_event(self, ts: int) -> MarksRecorded:
        self._next_marks_ts = ts - ts % MARKS_EVERY_NS + MARKS_EVERY_NS
        p = self.portfolio
        marks = {s: pos.mark for s, pos in p.positions.items() if pos.mark}
        for sym, q in self.quotes.items():
            marks[sym] = (q.bid + q.ask) * 0.5
        p.sample_equity(ts)
        return MarksRecorded(ts, marks, p.equity, p.cash, p.peak_equity, p.day_start_equity)

    # ------------------------------------------------------------------ decisions

    def _run_strategies(self, bar: Bar, slots: list[_StrategySlot]) -> list[Any]:
        out: list[Any] = []
        for slot in slots:
            slot.atr.update(bar.high, bar.low, bar.close)
            if not slot.cfg.enabled:
                continue
            signal = slot.strategy.on_bar(bar, slot.position)
            if signal is not None:
                out.extend(self.decide(slot, signal, bar.close))
        return out

    def decide(self, slot: _StrategySlot, signal: Signal, price: float) -> list[Any]:
        """Turn a strategy's signal into a decision, an intent, verdicts and maybe an order."""
        strat = slot.strategy
        self._decision_seq += 1
        symbol = strat.symbol
        inst = self.instruments[symbol]
        decision = Decision(
            decision_id=f"d{self.session}-{self._decision_seq}",
            ts=self.now,
            strategy_id=strat.strategy_id,
            symbol=symbol,
            venue=inst.venue,
            action=signal.action,
            rule=signal.rule,
            reason=signal.reason,
            confidence=signal.confidence,
            inputs=dict(signal.inputs),
            reduce_only=signal.reduce_only,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        self.counters["decisions"] += 1
        if signal.action == Action.HOLD:
            return [made]
        return [made, *self.evaluate(self.make_intent(decision, slot, price))]

    def make_intent(self, decision: Decision, slot: _StrategySlot, price: float) -> OrderIntent:
        """Size the decision into an intent. Exits close the strategy's own position."""
        side = Side.BUY if decision.action == Action.BUY else Side.SELL
        q = self.quotes.get(decision.symbol)
        ref = (q.bid + q.ask) * 0.5 if q is not None else price
        own = slot.position.qty
        if decision.reduce_only:
            net = self.portfolio.positions.get(decision.symbol)
            net_qty = net.qty if net is not None else 0.0
            qty = min(abs(own), abs(net_qty)) if own * side.sign < 0 else 0.0
        else:
            qty = size_for(slot.cfg.sizing, self.portfolio.equity, ref, slot.atr.value)
        self._order_seq += 1
        return OrderIntent(
            intent_id=f"ck-{self.session}-{self._order_seq}",
            decision_id=decision.decision_id,
            strategy_id=decision.strategy_id,
            symbol=decision.symbol,
            venue=decision.venue,
            side=side,
            qty=qty,
            order_type=OrderType.MARKET,
            ref_price=ref,
            ts=self.now,
            reduce_only=decision.reduce_only,
        )

    def risk_context(self, symbol: str) -> RiskContext:
        p = self.portfolio
        return RiskContext(
            now=self.now,
            equity=p.equity,
            cash=p.cash,
            positions={s: pos.qty for s, pos in p.positions.items() if pos.qty},
            marks={s: pos.mark for s, pos in p.positions.items()}
            | {s: (q.bid + q.ask) * 0.5 for s, q in self.quotes.items()},
            open_order_qty=self.open_order_qty,
            quote=self.quotes.get(symbol),
            instrument=self.instruments[symbol],
            throttle=self.throttle,
            fee_rate=self.fee_rate,
        )

    def evaluate(self, intent: OrderIntent) -> list[Any]:
        """Run every pre-trade check; submit when all pass. Every verdict is kept for the trace."""
        self.counters["intents"] += 1
        if self.blocked_reason:
            blocked = Verdict("engine", False, "ENGINE_BLOCKED", self.blocked_reason)
            return [self._denied(intent, (blocked,))]
        if intent.qty <= 0:
            verdicts: tuple[Verdict, ...] = (
                Verdict(
                    "sizing",
                    False,
                    "SIZE_ZERO",
                    "sizing gave no quantity (no position to reduce, or equity/price unusable)",
                ),
            )
            return [self._denied(intent, verdicts)]
        adjusted, verdict_list = run_checks(intent, self.risk_context(intent.symbol), self.limits)
        verdicts = tuple(verdict_list)
        if not all_passed(verdict_list):
            return [self._denied(adjusted, verdicts)]
        return self.submit(adjusted, verdicts)

    def _denied(self, intent: OrderIntent, verdicts: tuple[Verdict, ...]) -> IntentChecked:
        self.counters["denied"] += 1
        ev = IntentChecked(intent, verdicts, "denied")
        self.trace.append(ev)
        return ev

    def submit(self, intent: OrderIntent, verdicts: tuple[Verdict, ...]) -> list[Any]:
        """Record the order as pending (it counts toward exposure at once) and ask to send it."""
        self.counters["submitted"] += 1
        self.throttle.record(intent.strategy_id, self.now)
        order = Order(
            client_order_id=intent.intent_id,
            intent_id=intent.intent_id,
            strategy_id=intent.strategy_id,
            symbol=intent.symbol,
            venue=intent.venue,
            side=intent.side,
            order_type=intent.order_type,
            qty=intent.qty,
            limit_price=intent.limit_price,
            status=OrderStatus.PENDING_NEW,
            ts_created=self.now,
            ts_updated=self.now,
            reduce_only=intent.reduce_only,
        )
        self._track(order)
        ev = IntentChecked(intent, verdicts, "submitted")
        self.trace.append(ev)
        return [ev, SubmitOrder(order, intent)]

    # ------------------------------------------------------------------ broker feedback

    def _track(self, order: Order) -> None:
        old = self.open_orders.get(order.client_order_id)
        if old is not None:
            self.open_order_qty[old.symbol] = (
                self.open_order_qty.get(old.symbol, 0.0) - old.remaining * old.side.sign
            )
        if order.status.is_terminal:
            self.open_orders.pop(order.client_order_id, None)
        else:
            self.open_orders[order.client_order_id] = order
            self.open_order_qty[order.symbol] = (
                self.open_order_qty.get(order.symbol, 0.0) + order.remaining * order.side.sign
            )

    def on_broker(self, items: list[OrderUpdate | Fill]) -> list[EngineEvent]:
        """Apply the broker's order updates and fills to orders, portfolio and strategy views."""
        out: list[EngineEvent] = []
        for item in items:
            if isinstance(item, Fill):
                out.append(self.apply_fill(item))
            else:
                self._track(item.order)
                ev = OrderUpdated(item.order, item.ts)
                self.trace.append(ev)
                out.append(ev)
        return out

    def apply_fill(self, fill: Fill) -> FillReceived:
        self.counters["fills"] += 1
        realized = self.portfolio.apply_fill(fill)
        self._apply_to_strategy(fill)
        pos = self.portfolio.positions.get(fill.symbol)
        ev = FillReceived(fill, realized, pos.qty if pos is not None else 0.0)
        self.trace.append(ev)
        return ev

    def _apply_to_strategy(self, fill: Fill) -> None:
        slot = self.slots.get((fill.strategy_id, fill.symbol))
        if slot is None:
            return
        pos = slot.position
        signed = fill.qty * fill.side.sign
        new_qty = pos.qty + signed
        if abs(new_qty) < 1e-12:
            slot.position = PositionView()
        elif pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            avg = (pos.avg_price * abs(pos.qty) + fill.price * abs(signed)) / abs(new_qty)
            slot.position = PositionView(new_qty, avg)
        elif (pos.qty > 0) == (new_qty > 0):
            slot.position = PositionView(new_qty, pos.avg_price)
        else:
            slot.position = PositionView(new_qty, fill.price)

    # ------------------------------------------------------------------ restore and views

    def restore(self, fills: list[Fill], orders: list[Order]) -> None:
        """Rebuild per-strategy positions and open orders after a restart."""
        for fill in fills:
            self._apply_to_strategy(fill)
        for order in orders:
            self._track(order)

    def strategy_positions(self) -> dict[str, dict[str, float]]:
        return {
            f"{sid}:{sym}": {"qty": s.position.qty, "avg_price": s.position.avg_price}
            for (sid, sym), s in self.slots.items()
            if s.position.qty
        }
