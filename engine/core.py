"""The sans-I/O decision pipeline: market event in, events and order submissions out.

Nothing here awaits, reads a clock or touches a file: time is the event's own timestamp, so a
backtest, a replay and the live engine drive exactly the same code. The async runtime around it
journals what it returns and hands submissions to a broker only after the intent is durable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from engine.approvals import ApprovalGate
from engine.breakers import BreakerBoard, BreakerChange
from engine.checks import RiskContext, all_passed, run_checks
from engine.config import Config, StrategyConfig
from engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    BreakerChanged,
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
from engine.safety import SafetyController, TradingState
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
# Sizing stays this far inside the notional and position caps, so that the small price move
# between the intent and its approval or fill does not push the order over the limit.
SIZING_HEADROOM = 0.98
NS_PER_DAY = 86_400 * NS_PER_SECOND


@dataclass(slots=True, frozen=True)
class SubmitOrder:
    """An order the runtime must make durable (the intent row) and then hand to the broker."""

    order: Order
    intent: OrderIntent


@dataclass(slots=True, frozen=True)
class CancelOrder:
    """Ask the broker to cancel an open order (the kill switch, a halt, an operator)."""

    client_order_id: str
    reason: str


SlippageModel = Callable[[Side, float, Quote], float]


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
        slippage_model: SlippageModel | None = None,
        marks_every_s: float = 60.0,
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
        # Venues where nothing may be sent, and why (reconciliation differences a person has
        # not resolved yet). Set by the venue runtime; checked for every intent.
        self.venue_halts: dict[str, str] = {}
        # Why a symbol's market data cannot be trusted right now (None: it can), asked for every
        # intent; the venue runtime sets it from its feeds (a reconnecting feed is unsynced).
        self.market_gate: Callable[[str], str | None] | None = None
        self._decision_seq = 0
        self._order_seq = 0
        self._next_marks_ts = 0
        # How often marks and equity are recorded (the journal's restart point); a backtest,
        # which samples equity itself, asks for it rarely.
        self._marks_every_ns = int(marks_every_s * NS_PER_SECOND)
        self._next_day_ts = 0
        self.slippage_model = slippage_model
        self.trace: deque[EngineEvent] = deque(maxlen=cfg.engine.trace_size)
        ids = [s.id for s in cfg.strategies]
        self.safety = SafetyController(cfg.safety.kill_switch, ids)
        self.breakers = BreakerBoard(cfg)
        self.approvals = ApprovalGate(
            cfg.safety.approval,
            {s.id: s.approval for s in cfg.strategies},
            live=cfg.engine.mode == "live",
        )
        # What each breaker did when it tripped, so its re-arm can undo exactly that.
        self._breaker_actions: dict[tuple[str, str], str] = {}
        # Per order: the modelled slippage (bps) at intent time, for the slippage breaker.
        self._order_model: dict[str, float] = {}
        self._decisions: dict[str, Decision] = {}
        # Fees paid to open each strategy's position per symbol, charged to the round trip.
        self._open_fees: dict[tuple[str, str], float] = {}
        self._next_clock_ts = 0
        # Set when an operator released the kill switch over a standing loss limit: no automatic
        # re-engagement until equity is back inside the limit (or the day rolls).
        self.loss_override = False
        self.set_kill_limits(cfg.safety.kill_switch)
        # Orders submitted in live mode so far (across restarts): the canary counts these.
        self.live_trades = 0
        self._canary_limits: tuple[Any, Any] | None = None
        self.counters = {
            "decisions": 0,
            "intents": 0,
            "denied": 0,
            "submitted": 0,
            "awaiting_approval": 0,
            "fills": 0,
        }

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
        mid = (q.bid + q.ask) * 0.5
        out = self._marked(q.symbol, mid, ts)
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
        out = list(self._marked(bar.symbol, bar.close, ts))
        for _builder, slots in self._routes.get(bar.symbol, {}).values():
            out.extend(self._run_strategies(bar, slots))
        return out

    def _marked(self, symbol: str, price: float, ts: int) -> list[Any]:
        """Mark to market, then what must be judged at every price: the loss limits (so the
        automatic kill engages on the first quote at the limit), feed freshness, the clock."""
        if ts >= self._next_day_ts:
            self._roll_day(ts)
        p = self.portfolio
        p.mark(symbol, price, ts)
        out = _EMPTY
        if ts >= self._next_marks_ts:
            out = [self._marks_event(ts)]
        eq = p.equity
        safety = self.safety
        if eq <= p.day_start_equity * safety.daily_keep or eq <= p.peak_equity * safety.dd_keep:
            if not self.loss_override and safety.auto_kill_due():
                out = [*out, *self._auto_kill(ts)]
        elif self.loss_override:
            self.loss_override = False
        changes = self.breakers.on_quote(symbol, ts)
        if changes:
            out = [*out, *self._apply_breakers(changes)]
        if ts >= self._next_clock_ts:
            produced = self.tick(ts)
            if produced:
                out = [*out, *produced]
        return out

    def set_kill_limits(self, kill_cfg: Any) -> None:
        """Loss limits as multipliers of equity, for the one-compare-per-quote check."""
        self.safety.set_kill_cfg(kill_cfg)

    def _roll_day(self, ts: int) -> None:
        """UTC midnight: the portfolio restarts its day (start-of-day equity for loss limits)."""
        self.loss_override = False
        self.portfolio.on_time(ts)
        self._next_day_ts = ts - ts % NS_PER_DAY + NS_PER_DAY

    def _marks_event(self, ts: int) -> MarksRecorded:
        every = self._marks_every_ns
        self._next_marks_ts = ts - ts % every + every
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
        out: list[Any] = [made]
        # Count signals only while the strategy may act: a paused strategy's or a halted
        # engine's signals are not a runaway loop, and must not keep the gauge pinned.
        if (
            not self.safety.is_paused(strat.strategy_id)
            and self.safety.trading_state is not TradingState.HALTED
        ):
            out.extend(self._apply_breakers(self.breakers.on_signal(strat.strategy_id, self.now)))
        out.extend(self.evaluate(self.make_intent(decision, slot, price), decision))
        return out

    def make_intent(self, decision: Decision, slot: _StrategySlot, price: float) -> OrderIntent:
        """Size the decision into an intent. Exits close the strategy's own position."""
        side = Side.BUY if decision.action == Action.BUY else Side.SELL
        q = self.quotes.get(decision.symbol)
        ref = (q.bid + q.ask) * 0.5 if q is not None else price
        # The strategy's position as it will be once its in-flight orders fill: an exit sized
        # from the filled position alone would double up with an exit already on its way.
        own = slot.position.qty + self._in_flight(decision.strategy_id, decision.symbol)
        if decision.reduce_only:
            net = self.portfolio.positions.get(decision.symbol)
            net_qty = net.qty if net is not None else 0.0
            qty = min(abs(own), abs(net_qty)) if own * side.sign < 0 else 0.0
        else:
            equity = self.portfolio.equity
            qty = size_for(slot.cfg.sizing, equity, ref, slot.atr.value)
            # Size within the limits rather than propose what the checks must deny: volatility
            # sizing on a quiet market would otherwise ask for an absurd quantity.
            lim = self.limits
            net = self.portfolio.positions.get(decision.symbol)
            held = (net.qty if net is not None else 0.0) + self.open_order_qty.get(
                decision.symbol, 0.0
            )
            room = lim.max_position_fraction * equity - max(held * side.sign, 0.0) * ref
            cap = min(lim.max_order_notional, room) * SIZING_HEADROOM
            if ref > 0 and qty * ref > cap:
                qty = max(cap, 0.0) / ref
        return self._intent(decision, side, qty, ref, decision.reduce_only, "strategy")

    def _in_flight(self, strategy_id: str, symbol: str) -> float:
        """Signed quantity of the strategy's open orders and of its intents waiting for
        approval on the symbol (usually none): what its position will be once they go."""
        total = 0.0
        for order in self.open_orders.values():
            if order.strategy_id == strategy_id and order.symbol == symbol:
                total += order.remaining * order.side.sign
        for pending in self.approvals.pending():
            it = pending.intent
            if it.strategy_id == strategy_id and it.symbol == symbol:
                total += it.qty * it.side.sign
        return total

    def _intent(
        self, decision: Decision, side: Side, qty: float, ref: float, reduce_only: bool, origin: str
    ) -> OrderIntent:
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
            reduce_only=reduce_only,
            origin=origin,
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

    def effective_limits(self) -> Any:
        """The limits in force: in live mode the first trades run under the canary limits."""
        live = self.cfg.safety.live
        if self.cfg.engine.mode != "live" or self.live_trades >= live.canary_trades:
            return self.limits
        cap = min(self.limits.max_order_notional, live.canary_max_order_notional)
        if self._canary_limits is None or self._canary_limits[0] is not self.limits:
            self._canary_limits = (
                self.limits,
                self.limits.model_copy(update={"max_order_notional": cap}),
            )
        return self._canary_limits[1]

    def reduces_exposure(self, intent: OrderIntent) -> bool:
        """True when the order only shrinks the symbol's net position, never flipping it, even
        if every other open order on the symbol fills too (two exits must not make a short)."""
        pos = self.portfolio.positions.get(intent.symbol)
        qty = pos.qty if pos is not None else 0.0
        sign = intent.side.sign
        if qty * sign >= 0 or intent.qty > abs(qty) * (1 + 1e-9):
            return False
        pending = self.open_order_qty.get(intent.symbol, 0.0)
        own = self.open_orders.get(intent.intent_id)
        if own is not None:
            pending -= own.remaining * own.side.sign
        with_open = qty + pending
        return with_open * sign < 0 and intent.qty <= abs(with_open) * (1 + 1e-9)

    def evaluate(
        self, intent: OrderIntent, decision: Decision, *, approved_by: str = ""
    ) -> list[Any]:
        """Checks, then the safety gate, then the approval gate; submit when all allow it.

        Every verdict is kept (no short-circuit) so the trace answers "why didn't it trade?".
        """
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
        adjusted, verdict_list = run_checks(
            intent, self.risk_context(intent.symbol), self.effective_limits()
        )
        verdict_list.append(self._safety_verdict(adjusted))
        if self.venue_halts or self.market_gate is not None:
            verdict_list.append(self._venue_verdict(adjusted))
        if adjusted.origin == "strategy":
            why = self.breakers.blocked(adjusted.strategy_id, adjusted.symbol)
            verdict_list.append(
                Verdict("breakers", True, "OK", "no breaker blocks it")
                if why is None
                else Verdict("breakers", False, "BREAKER_TRIPPED", why)
            )
        verdicts = tuple(verdict_list)
        if not all_passed(verdict_list):
            return [self._denied(adjusted, verdicts)]
        if (
            adjusted.origin == "strategy"
            and not approved_by
            and self.approvals.needs_approval(adjusted.strategy_id)
        ):
            return self._ask_approval(adjusted, decision, verdicts)
        return self.submit(
            adjusted, verdicts, detail=f"approved by {approved_by}" if approved_by else ""
        )

    def _venue_verdict(self, intent: OrderIntent) -> Verdict:
        halted = self.venue_halts.get(intent.venue)
        if halted:
            return Verdict("venue", False, "VENUE_HALTED", f"venue HALTED: {halted}")
        unsynced = self.market_gate(intent.symbol) if self.market_gate is not None else None
        if unsynced:
            return Verdict("venue", False, "MARKET_UNSYNCED", unsynced)
        return Verdict("venue", True, "OK", f"{intent.venue} reconciled, market data in sync")

    def _safety_verdict(self, intent: OrderIntent) -> Verdict:
        why = self.safety.gate(
            intent.strategy_id,
            self.reduces_exposure(intent),
            intent.origin == "flatten",
            intent.origin == "operator",
        )
        if why is None:
            return Verdict("safety", True, "OK", f"trading state {self.safety.trading_state}")
        state = self.safety.trading_state
        code = (
            "ENGINE_HALTED"
            if state is TradingState.HALTED
            else "REDUCING_ONLY"
            if state is TradingState.REDUCING
            else "STRATEGY_PAUSED"
        )
        return Verdict("safety", False, code, why)

    def _ask_approval(
        self, intent: OrderIntent, decision: Decision, verdicts: tuple[Verdict, ...]
    ) -> list[Any]:
        self.counters["awaiting_approval"] += 1
        q = self.quotes.get(intent.symbol)
        est_slip = 0.0
        if self.slippage_model is not None and q is not None:
            est_slip = self.slippage_model(intent.side, intent.qty, q)
        est_fee = intent.notional * self.fee_rate
        pending = self.approvals.submit(intent, decision, verdicts, self.now, est_fee, est_slip)
        self._decisions[intent.intent_id] = decision
        checked = IntentChecked(intent, verdicts, "awaiting_approval", pending.approval_id)
        requested = ApprovalRequested(self.now, pending.to_dict())
        self.trace.append(checked)
        self.trace.append(requested)
        return [checked, requested]

    def _denied(self, intent: OrderIntent, verdicts: tuple[Verdict, ...]) -> IntentChecked:
        self.counters["denied"] += 1
        ev = IntentChecked(intent, verdicts, "denied")
        self.trace.append(ev)
        return ev

    def submit(
        self, intent: OrderIntent, verdicts: tuple[Verdict, ...], detail: str = ""
    ) -> list[Any]:
        """Record the order as pending (it counts toward exposure at once) and ask to send it."""
        self.counters["submitted"] += 1
        if self.cfg.engine.mode == "live":
            self.live_trades += 1
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
        q = self.quotes.get(intent.symbol)
        if self.slippage_model is not None and q is not None:
            self._order_model[order.client_order_id] = self.slippage_model(
                intent.side, intent.qty, q
            )
        ev = IntentChecked(intent, verdicts, "submitted", detail)
        self.trace.append(ev)
        out: list[Any] = [ev]
        if intent.origin == "strategy":
            out.extend(
                self._apply_breakers(self.breakers.on_order_submitted(intent.strategy_id, self.now))
            )
        out.append(SubmitOrder(order, intent))
        return out

    # ------------------------------------------------------------------ time, breakers, kill

    def tick(self, now: int) -> list[Any]:
        """Once a second of engine time: stale feeds, breaker cool-downs, approval expiry."""
        self._next_clock_ts = now - now % NS_PER_SECOND + NS_PER_SECOND
        out: list[Any] = []
        out.extend(self._apply_breakers(self.breakers.on_clock(now)))
        for outcome in self.approvals.expire(now):
            ev = ApprovalDecided(now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        return out

    def on_clock_drift(self, drift_ms: float) -> list[Any]:
        """A measured offset of our clock from a venue's (NaN: it could not be measured)."""
        return self._apply_breakers(self.breakers.on_clock_drift(drift_ms, self.now))

    def _apply_breakers(self, changes: list[BreakerChange]) -> list[Any]:
        """Journal every trip and re-arm, and do what the breaker asks: pause, halt, block."""
        if not changes:
            return _EMPTY
        out: list[Any] = []
        for ch in changes:
            ev = BreakerChanged(ch.ts, ch.to_dict())
            self.trace.append(ev)
            out.append(ev)
            key = (ch.breaker, ch.scope)
            if ch.tripped:
                self._breaker_actions[key] = ch.action
                reason = f"{ch.breaker}: {ch.reason}"
                if ch.action == "pause_strategy":
                    out.extend(self.safety.pause(ch.scope, by="system", reason=reason, ts=ch.ts))
                elif ch.action == "halt_engine":
                    out.extend(
                        self.safety.set_breaker_halt(f"{ch.breaker}:{ch.scope}", reason, ch.ts)
                    )
                    out.extend(self.cancel_all(f"engine halted by breaker {ch.breaker}"))
            else:
                action = self._breaker_actions.pop(key, "")
                if action == "pause_strategy":
                    st = self.safety.state.strategies.get(ch.scope)
                    if (
                        st is not None
                        and st.paused
                        and st.by == "system"
                        and st.reason.startswith(f"{ch.breaker}:")
                    ):
                        out.extend(
                            self.safety.resume(
                                ch.scope,
                                by=ch.by,
                                reason=f"breaker {ch.breaker} re-armed",
                                ts=ch.ts,
                            )
                        )
                elif action == "halt_engine":
                    out.extend(
                        self.safety.set_breaker_halt(f"{ch.breaker}:{ch.scope}", None, ch.ts)
                    )
        return out

    def _auto_kill(self, ts: int) -> list[Any]:
        p = self.portfolio
        breach = self.safety.loss_breach(p.equity, p.day_start_equity, p.peak_equity)
        if breach is None:
            return []
        source, reason = breach
        level = self.cfg.safety.kill_switch.auto_level
        return self.kill(level, by="system", reason=reason, source=source)

    def kill(self, level: str, *, by: str, reason: str, source: str, client: str = "") -> list[Any]:
        """Engage the kill switch: state first (no submit from here on), then its consequences."""
        out: list[Any] = list(
            self.safety.engage(
                level, by=by, reason=reason, source=source, ts=self.now, client=client
            )
        )
        if not out:
            return out
        self.trace.extend(out)
        for outcome in self.approvals.cancel_all(self.now, f"kill switch ({level}): {reason}", by):
            ev = ApprovalDecided(self.now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        if level in ("halt", "flatten"):
            out.extend(self.cancel_all(f"kill switch ({level})"))
        if level == "flatten":
            out.extend(self.flatten(None, by=by, reason=reason, origin="flatten"))
        return out

    def cancel_all(self, reason: str) -> list[Any]:
        return [CancelOrder(coid, reason) for coid in list(self.open_orders)]

    def flatten(
        self, symbol: str | None, *, by: str, reason: str, origin: str = "operator"
    ) -> list[Any]:
        """Close positions with reduce-only market orders through the normal order path.

        Each strategy's own share is closed under its id (so its view stays true); whatever is
        left of the net position (e.g. from another session) goes out under ``origin``.
        """
        out: list[Any] = []
        symbols = [symbol] if symbol else sorted(self.portfolio.positions)
        for sym in symbols:
            pos = self.portfolio.positions.get(sym)
            if pos is None or abs(pos.qty) < 1e-12 or sym not in self.instruments:
                continue
            remaining = pos.qty
            for (sid, ssym), slot in sorted(self.slots.items()):
                own = slot.position.qty
                if ssym != sym or own == 0 or (own > 0) != (remaining > 0):
                    continue
                qty = min(abs(own), abs(remaining))
                out.extend(self._flatten_one(sid, sym, qty, remaining, by, reason, origin))
                remaining -= qty if remaining > 0 else -qty
            if abs(remaining) > 1e-12:
                out.extend(
                    self._flatten_one(origin, sym, abs(remaining), remaining, by, reason, origin)
                )
        return out

    def _flatten_one(
        self, sid: str, sym: str, qty: float, net: float, by: str, reason: str, origin: str
    ) -> list[Any]:
        self._decision_seq += 1
        side = Side.SELL if net > 0 else Side.BUY
        q = self.quotes.get(sym)
        ref = (q.bid + q.ask) * 0.5 if q is not None else self.portfolio.positions[sym].mark
        decision = Decision(
            decision_id=f"d{self.session}-{self._decision_seq}",
            ts=self.now,
            strategy_id=sid,
            symbol=sym,
            venue=self.instruments[sym].venue,
            action=Action.SELL if side is Side.SELL else Action.BUY,
            rule=f"{origin}_flatten",
            reason=f"flatten by {by}: {reason}",
            confidence=1.0,
            inputs={"position": net},
            reduce_only=True,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        return [
            made,
            *self.evaluate(self._intent(decision, side, qty, ref, True, origin), decision),
        ]

    # ------------------------------------------------------------------ approvals

    def approve(self, approval_id: str, *, by: str, expected_hash: str | None = None) -> list[Any]:
        """A person approved: re-run every check at the current price, then submit or reject."""
        pend = self.approvals.get(approval_id)
        q = self.quotes.get(pend.intent.symbol) if pend is not None else None
        mid = (q.bid + q.ask) * 0.5 if q is not None else None
        outcome = self.approvals.approve(
            approval_id, self.now, mid, by=by, expected_hash=expected_hash
        )
        decided = ApprovalDecided(self.now, outcome.to_dict())
        out: list[Any] = [decided]
        if outcome.status != "approved" or outcome.intent is None or mid is None:
            self.trace.append(decided)
            return out
        self.trace.append(decided)
        out.extend(
            self._apply_breakers(self.breakers.reviewed(outcome.intent.strategy_id, by, self.now))
        )
        intent = replace(outcome.intent, ref_price=mid, ts=self.now)
        decision = self._decisions.pop(intent.intent_id, None) or (
            pend.decision if pend is not None else None
        )
        assert decision is not None
        result = self.evaluate(intent, decision, approved_by=by)
        checked = next((e for e in result if isinstance(e, IntentChecked)), None)
        if checked is not None and checked.outcome == "denied":
            codes = ", ".join(checked.denied_codes)
            redo = self.approvals.reject_after_checks(
                approval_id, self.now, f"checks failed on approval: {codes}"
            )
            if redo is not None:
                ev = ApprovalDecided(self.now, redo.to_dict())
                self.trace.append(ev)
                result.append(ev)
        return out + result

    def reject(self, approval_id: str, *, by: str, reason: str) -> list[Any]:
        outcome = self.approvals.reject(approval_id, self.now, by=by, reason=reason)
        self._decisions.pop(approval_id.removeprefix("ap-"), None)
        ev = ApprovalDecided(self.now, outcome.to_dict())
        self.trace.append(ev)
        return [ev]

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

    def on_broker(self, items: list[OrderUpdate | Fill]) -> list[Any]:
        """Apply the broker's order updates and fills to orders, portfolio and strategy views."""
        out: list[Any] = []
        for item in items:
            if isinstance(item, Fill):
                out.extend(self.apply_fill(item))
            else:
                order = item.order
                prev = self.open_orders.get(order.client_order_id)
                self._track(order)
                ev = OrderUpdated(order, item.ts)
                self.trace.append(ev)
                out.append(ev)
                sid = order.strategy_id
                if sid in self.safety.state.strategies:
                    if order.status is OrderStatus.REJECTED:
                        out.extend(
                            self._apply_breakers(
                                self.breakers.on_order_rejected(sid, order.reason, item.ts)
                            )
                        )
                    elif order.status is OrderStatus.NEW and (
                        prev is None or prev.status is OrderStatus.PENDING_NEW
                    ):
                        out.extend(
                            self._apply_breakers(self.breakers.on_order_accepted(sid, item.ts))
                        )
                if order.status.is_terminal:
                    self._order_model.pop(order.client_order_id, None)
        return out

    def apply_fill(self, fill: Fill) -> list[Any]:
        self.counters["fills"] += 1
        p = self.portfolio
        key = (fill.strategy_id, fill.symbol)
        slot = self.slots.get(key)
        own = slot.position if slot is not None else PositionView()
        realized = p.apply_fill(fill)
        trade_pnl = self._round_trip_pnl(key, own, fill)
        self._apply_to_strategy(fill)
        pos = p.positions.get(fill.symbol)
        ev = FillReceived(fill, realized, pos.qty if pos is not None else 0.0)
        self.trace.append(ev)
        out: list[Any] = [ev]
        sid = fill.strategy_id
        if sid not in self.safety.state.strategies:
            return out
        br = self.breakers
        if trade_pnl is not None:  # a reducing fill closed (part of) a trade
            out.extend(self._apply_breakers(br.on_round_trip(sid, trade_pnl, p.equity, fill.ts)))
        # Slippage as the model means it: the fill against the mid of the quote it happened on
        # (spread and impact), not the market's drift during latency, which is not fill quality.
        model = self._order_model.get(fill.client_order_id)
        q = self.quotes.get(fill.symbol)
        if model is not None and q is not None:
            mid = (q.bid + q.ask) * 0.5
            realized_bps = (fill.price - mid) / mid * 1e4 * fill.side.sign
            out.extend(self._apply_breakers(br.on_fill_slippage(sid, realized_bps, model, fill.ts)))
        if self.approvals.mode(sid) == "auto":
            out.extend(self._apply_breakers(br.on_fill(sid, fill.ts)))
        return out

    def _round_trip_pnl(self, key: tuple[str, str], own: PositionView, fill: Fill) -> float | None:
        """The strategy's net PnL on the part of its position this fill closes: price move,
        minus this fill's share of fee, minus the opening fees of the closed share. None when
        the fill only opens or adds. Fees matter: a trade that loses only to fees is a loss."""
        fees = self._open_fees.get(key, 0.0)
        if own.qty * fill.side.sign >= 0 or own.qty == 0:
            self._open_fees[key] = fees + fill.fee
            return None
        closed = min(fill.qty, abs(own.qty))
        share = fees * closed / abs(own.qty)
        close_fee = fill.fee * closed / fill.qty if fill.qty > 0 else fill.fee
        direction = 1.0 if own.qty > 0 else -1.0
        pnl = (fill.price - own.avg_price) * closed * direction - close_fee - share
        # What the fill opens beyond the old position (a flip) carries the rest of its fee.
        self._open_fees[key] = fees - share + (fill.fee - close_fee)
        return pnl

    def _apply_to_strategy(self, fill: Fill) -> None:
        slot = self.slots.get((fill.strategy_id, fill.symbol))
        if slot is None:
            return
        pos = slot.position
        signed = fill.qty * fill.side.sign
        new_qty = pos.qty + signed
        inst = self.instruments.get(fill.symbol)
        dust = inst.lot_size * 0.5 if inst is not None else 1e-12
        # A remainder below half a lot cannot be traded (it would be denied BELOW_MIN_QTY
        # forever), so the strategy sees itself flat; the portfolio keeps the exact quantity.
        if abs(new_qty) < max(dust, 1e-12):
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
