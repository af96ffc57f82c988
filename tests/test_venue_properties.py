"""Venue safety invariants of the core, as properties over arbitrary programs.

Whatever happens in between (quotes, reconciliation halting or releasing a venue, a feed losing
and regaining sync, an operator's flatten), the core never asks to send an order to a venue that
is HALTED by reconciliation or on a symbol whose market data is unsynced.
"""

from __future__ import annotations

from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.commands import execute, parse_command
from engine.config import parse_config
from engine.core import EngineCore, SubmitOrder
from engine.portfolio import Portfolio
from engine.strategies.base import Strategy
from engine.types import Action, Bar, Instrument, PositionView, Quote, Signal

SYMBOLS = {"A/USDT": "venue_a", "B/USDT": "venue_b"}
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Flipper(Strategy):
    """Buys when flat, sells when long, on every quote: it always wants to trade."""

    kind: ClassVar[str] = "flipper"
    Params: ClassVar[type[BaseModel]] = _NoParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        action = Action.SELL if position.qty > 0 else Action.BUY
        return Signal(action=action, rule="flip", reason="always", confidence=1.0)


def make_core() -> EngineCore:
    cfg = parse_config(
        {
            "market": {
                "simulated": {
                    "symbols": {s: {"initial_price": 100.0} for s in SYMBOLS},
                }
            },
            "strategies": [
                {
                    "id": f"flip_{s[0].lower()}",
                    "kind": "ema_cross",
                    "symbols": [s],
                    "approval": "auto",
                    "sizing": {"model": "fixed_qty", "qty": 1.0},
                    "allow_short": True,  # it flips: a sell while its buy is on its way
                }
                for s in SYMBOLS
            ],
            "safety": {
                "breakers": {
                    "consecutive_losses": 10_000,
                    "global_consecutive_losses": 10_000,
                    "max_unreviewed_fills": 1_000_000,
                }
            },
        }
    )
    strategies = [Flipper(f"flip_{s[0].lower()}", s, _NoParams()) for s in SYMBOLS]
    instruments = {s: Instrument(s, v, 0.01, 0.001, 0.0, 5.0) for s, v in SYMBOLS.items()}
    return EngineCore(cfg, strategies, instruments, Portfolio(100_000.0))


steps = st.one_of(
    st.tuples(st.just("quote"), st.sampled_from(sorted(SYMBOLS)), st.floats(95, 105)),
    st.tuples(st.just("halt"), st.sampled_from(sorted(SYMBOLS.values())), st.just(0.0)),
    st.tuples(st.just("release"), st.sampled_from(sorted(SYMBOLS.values())), st.just(0.0)),
    st.tuples(st.just("unsync"), st.sampled_from(sorted(SYMBOLS)), st.just(0.0)),
    st.tuples(st.just("sync"), st.sampled_from(sorted(SYMBOLS)), st.just(0.0)),
    st.tuples(st.just("flatten"), st.sampled_from(sorted(SYMBOLS)), st.just(0.0)),
)


def run_program(program: list[tuple[str, str, float]]) -> tuple[int, list[str]]:
    """Run the steps; return how many orders went out and every violation seen."""
    core = make_core()
    unsynced: set[str] = set()
    core.market_gate = lambda sym: f"{sym} unsynced" if sym in unsynced else None
    ts = T0
    sent = 0
    violations: list[str] = []

    def check(items: list | None) -> None:
        nonlocal sent
        for it in items or ():
            if type(it) is not SubmitOrder:
                continue
            sent += 1
            o = it.order
            if o.venue in core.venue_halts:
                violations.append(f"sent {o.client_order_id} to halted {o.venue}")
            if o.symbol in unsynced:
                violations.append(f"sent {o.client_order_id} on unsynced {o.symbol}")

    for kind, target, price in program:
        ts += SEC
        if kind == "quote":
            check(core.on_quote(Quote(target, price, price + 0.02, 50.0, 50.0, ts, ts, "x")))
        elif kind == "halt":
            core.venue_halts[target] = f"{target}: reconciliation found 1 unresolved difference"
        elif kind == "release":
            core.venue_halts.pop(target, None)
        elif kind == "unsync":
            unsynced.add(target)
        elif kind == "sync":
            unsynced.discard(target)
        else:
            args = parse_command("flatten", {"symbol": target, "reason": "operator"})
            check(execute(core, "flatten", args, by="tester", client="test").events)
    return sent, violations


def test_orders_do_go_out_when_every_venue_is_reconciled_and_in_sync() -> None:
    """The property below is not vacuous: the same program without halts sends orders."""
    program = [("quote", s, 100.0 + i * 0.1) for i in range(6) for s in SYMBOLS]
    sent, violations = run_program(program)
    assert sent >= 4 and violations == []


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, min_size=1, max_size=80))
def test_no_order_ever_goes_to_a_halted_venue_or_an_unsynced_symbol(
    program: list[tuple[str, str, float]],
) -> None:
    _, violations = run_program(program)
    assert violations == []
