"""An adversarial review of limit orders and the approval gate where they meet the pre-trade
checks, the kill switch, breakers and restarts (review-lim): each test is a hole found by
attacking a promise as a hostile checker would, failing before its fix. Driven through the
real core and the paper broker (tests/test_limit_orders.py's Harness), a venue's slow or lost
cancel simulated by holding the broker's answer back.

COCKPIT_REVIEW_LIM_EXAMPLES raises the property's examples.

Tried and held (no test added; earlier reviews' tests pin most):
- A limit never fills worse than its price: resting fills at the limit (maker), a marketable
  one walks the book (L1 and L2, the extrapolation included) only while within the limit.
- Post-only never takes: it rejects on arrival when the touch is at or through its price, also
  after a late approve moved the market through it (seen on the CLI); a resting one fills as
  maker. Post-only with IOC/FOK refused; IOC/FOK never rest.
- Time to live: cancelled at the first event at its expiry, before the broker sees that quote
  (the core's expiry runs before the fill model); 1 ns before still works; restored with its
  expiry after kill -9 (CLI: pending approval expired at the restart, never sent; verify ok).
- Collar exactly at 1% passes, one tick beyond is denied; the checks run again on a move and
  on an approve (a move within tolerance that puts the limit outside the collar is rejected
  after checks).
- Approval hash: covers price, quantity, post-only, tif and time to live; approve twice, a
  stale or another engine's hash, reject racing approve, two clients: decided once.
- auto_after_approved: requests withdrawn, superseded, expired or rejected never count; the
  post-only rejections after a late approve do not trip consecutive_rejects (the venue's
  accept resets the streak).
- A move after a partial fill works for what is left; a cancel that loses the race to a fill
  lets the replacement lapse; the kill switch at entries keeps a closing limit and its move.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.breakers import BreakerChange
from engine.core import SubmitOrder
from engine.events import ApprovalDecided, IntentChecked
from engine.types import NS_PER_SECOND, Action, LimitSpec, OrderUpdate
from engine.vocabulary import DenialCode, IntentOrigin, IntentOutcome
from tests.test_limit_orders import Harness


class SlowVenue(Harness):
    """The paper venue, except that cancels are held back until ``confirm`` (a venue whose
    answer to a cancel is slow, or lost and asked again)."""

    def __init__(self, mode: str = "auto") -> None:
        super().__init__()
        self.core.approvals._modes["s1"] = mode
        self.real_cancel = self.broker.cancel
        self.held: list[str] = []
        self.broker.cancel = self._hold  # type: ignore[method-assign]

    def _hold(self, coid: str, now: int, reason: str = "canceled") -> list[OrderUpdate]:
        self.held.append(coid)
        return []

    def confirm(self, coid: str) -> list[Any]:
        """The venue's answer to the cancel comes now: what the core does with it."""
        n = len(self.events)
        self.handle(self.core.on_broker(self.real_cancel(coid, self.core.now, "canceled")))
        return self.events[n:]

    def resting_limit(self, price: float, action: Action = Action.BUY) -> str:
        self.strat.say(action, LimitSpec(price))
        self.quote()
        (coid,) = [c for c, o in self.core.open_orders.items() if o.limit_price == price]
        return coid


def submitted(events: list[Any]) -> list[IntentChecked]:
    return [e for e in events if type(e) is IntentChecked and e.outcome == IntentOutcome.SUBMITTED]


# --------------------------------------------------------------- a move across a kill or pause


def test_a_move_waiting_on_its_cancel_does_not_outlive_a_kill_and_its_release() -> None:
    """A strategy moved its resting buy limit (cancel, then the new one once the venue
    confirms the cancel); the kill switch engaged at halt before the venue answered and was
    released. The venue's answer then sent the new buy, an entry decided before the kill,
    into the released engine (as if approvals pending at the kill had survived it)."""
    h = SlowVenue()
    h.quote()
    old = h.resting_limit(99.0)
    h.strat.say(Action.BUY, LimitSpec(99.5))  # the move: its cancel goes, the venue is slow
    h.quote()
    assert h.held == [old]
    h.handle(h.core.kill("halt", by="op", reason="stop", source="test"))
    h.core.safety.release(by="op", reason="checked", ts=h.core.now)
    after = h.confirm(old)
    assert submitted(after) == [] and not h.core.open_orders
    (voided,) = [e for e in after if type(e) is IntentChecked]
    assert voided.outcome == IntentOutcome.DENIED
    assert DenialCode.REDUCING_ONLY in voided.denied_codes
    assert "before a kill switch" in voided.verdicts[0].message


def test_a_move_waiting_on_its_cancel_does_not_outlive_a_pause_and_its_resume() -> None:
    """The same through a pause: the pause cancels the strategy's resting entry, the venue's
    answer came after the resume, and the move it confirmed sent the entry anyway."""
    h = SlowVenue()
    h.quote()
    old = h.resting_limit(99.0)
    h.strat.say(Action.BUY, LimitSpec(99.5))
    h.quote()
    h.handle(h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.core.now))
    h.core.safety.resume("s1", by="op", reason="fine", ts=h.core.now)
    assert submitted(h.confirm(old)) == [] and not h.core.open_orders


def test_a_move_that_only_reduces_still_goes_after_a_kill_at_entries() -> None:
    """The boundary: a take-profit limit within the position, moved while a kill at entries
    engaged and was released, still goes out (it only reduces, as it would under the kill).
    And with no stop in between, a move goes as before."""
    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, None)  # a market buy: long 1
    h.quote()
    h.quote()
    assert h.core.portfolio.positions["X/USDT"].qty == 1.0
    tp = h.resting_limit(100.5, Action.SELL)
    h.strat.say(Action.SELL, LimitSpec(100.4))
    h.quote()
    h.handle(h.core.kill("entries", by="op", reason="enough", source="test"))
    assert h.held == [tp]  # the kill keeps a closing limit within the position
    h.core.safety.release(by="op", reason="ok", ts=h.core.now)
    (sent,) = submitted(h.confirm(tp))
    assert sent.intent.limit_price == 100.4 and sent.intent.side == "sell"
    # No stop in between: a move of an entry goes out once its cancel is confirmed.
    h2 = SlowVenue()
    h2.quote()
    old = h2.resting_limit(99.0)
    h2.strat.say(Action.BUY, LimitSpec(99.5))
    h2.quote()
    (moved,) = submitted(h2.confirm(old))
    assert moved.intent.limit_price == 99.5


# --------------------------------------------------------------- approvals across a stop


def test_a_pause_rejects_the_strategys_waiting_entries_and_keeps_its_exits() -> None:
    """A pause cancelled the strategy's resting entries, even those a person had approved,
    but its entry still waiting for approval stayed: resumed a moment later, an approve sent
    an entry asked for before the pause. Now the pause rejects it (as the kill switch at
    entries does), and a waiting exit stays approvable."""
    h = SlowVenue(mode="approve")
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))  # an entry, waiting
    h.quote()
    (entry,) = h.core.approvals.pending()
    out = h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.core.now)
    h.handle(out)
    (gone,) = [e.outcome for e in out if type(e) is ApprovalDecided]
    assert gone["approval_id"] == entry.approval_id and gone["status"] == "rejected"
    assert "paused" in gone["reason"]
    h.core.safety.resume("s1", by="op", reason="fine", ts=h.core.now)
    again = h.core.approve(entry.approval_id, by="op")
    assert again[0].outcome["status"] == "refused" and submitted(again) == []
    # An exit waiting (long 1, a sell that only reduces) stays approvable through the pause.
    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    h.core.approvals._modes["s1"] = "approve"
    h.strat.say(Action.SELL, None, reduce_only=True)
    h.quote()
    (exit_,) = h.core.approvals.pending()
    out = h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.core.now)
    h.handle(out)
    assert not [e for e in out if type(e) is ApprovalDecided]
    h.core.safety.resume("s1", by="op", reason="fine", ts=h.core.now)
    sent = h.core.approve(exit_.approval_id, by="op")
    assert sent[0].outcome["status"] == "approved" and len(submitted(sent)) == 1


def test_a_breaker_halt_rejects_the_requests_waiting_for_approval() -> None:
    """A breaker that halts the engine (all strategies' rolling loss) left the requests
    waiting for a person pending, where the kill switch at halt rejects them: re-armed within
    their time to live, an approve sent an entry asked for before the halt."""
    h = SlowVenue(mode="approve")
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (p,) = h.core.approvals.pending()
    trip = BreakerChange("rolling_loss", "global", True, "halt_engine", "2% lost", 2, 2, h.ts)
    out = h.core.apply_breakers([trip])
    (gone,) = [e.outcome for e in out if type(e) is ApprovalDecided]
    assert gone["status"] == "rejected" and "rolling_loss" in gone["reason"]
    rearm = BreakerChange("rolling_loss", "global", False, "halt_engine", "re-armed", 0, 2, h.ts)
    h.handle(h.core.apply_breakers([rearm]))
    assert str(h.core.safety.trading_state) == "ACTIVE"
    again = h.core.approve(p.approval_id, by="op", expected_hash=p.intent_hash)
    assert again[0].outcome["status"] == "refused" and submitted(again) == []


# --------------------------------------------------------------- what the person approves


def test_the_person_sees_every_term_of_a_limit_the_approval_sends() -> None:
    """The approval's hash covers how a limit works (post-only, time in force, time to
    live), but neither the cockpit nor ``cockpit approvals`` showed it (the table did not even
    say limit or market): a person approved "buy 1 at 99" and the engine sent an IOC, or a
    limit that is cancelled 5 s later, or one that works until cancelled."""
    from cockpit.oneshot import format_approvals
    from cockpit.tui.approvals import approval_detail
    from engine.types import TimeInForce

    shown = []
    for action, spec in (
        (Action.BUY, LimitSpec(99.0, post_only=True, ttl_s=60.0)),
        (Action.SELL, LimitSpec(101.0, tif=TimeInForce.IOC, ttl_s=0.5)),
    ):
        h = SlowVenue(mode="approve")
        h.quote()
        h.strat.say(action, spec)
        h.quote()
        shown += [p.to_dict() for p in h.core.approvals.pending()]
    buy, sell = shown
    assert (buy["post_only"], buy["tif"], buy["ttl_s"]) == (True, "gtc", 60.0)
    assert (sell["post_only"], sell["tif"], sell["ttl_s"]) == (False, "ioc", 0.5)
    table = format_approvals([buy, sell], h.core.now)
    assert "limit post-only ttl 60s" in table and "limit IOC ttl 0.5s" in table
    assert "post-only ttl 60s" in approval_detail(buy, h.core.now).plain
    # A market order says so; a limit that works until done shows no time to live.
    waiting = []
    for action, spec in ((Action.BUY, None), (Action.SELL, LimitSpec(101.0))):
        h = SlowVenue(mode="approve")
        h.quote()
        h.strat.say(action, spec)
        h.quote()
        waiting += [p.to_dict() for p in h.core.approvals.pending()]
    rows = format_approvals(waiting, h.core.now)
    assert " market " in rows and "ttl" not in rows
    assert (waiting[1]["tif"], waiting[1]["ttl_s"], waiting[1]["post_only"]) == (
        "gtc",
        None,
        False,
    )


# --------------------------------------------------------------- an expiry not yet confirmed


def test_a_new_limit_waits_for_the_expired_ones_cancel_never_two_working() -> None:
    """A limit whose time to live ran out stays open until the venue confirms its cancel
    (asked again every 5 s when lost). A new limit signal on its side meanwhile was sent at
    once beside it, for the full size: two buys worked for one entry, and both could fill.
    It now waits for that cancel, as a move does, and works for what the old one left."""
    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=2.0))
    h.quote()
    (old,) = h.core.open_orders
    h.quote()
    h.quote()  # its time to live ran out: the cancel is asked, the venue has not answered
    assert h.held == [old] and list(h.core.open_orders) == [old]
    n = len(h.events)
    h.strat.say(Action.BUY, LimitSpec(99.5, ttl_s=2.0))
    h.quote()
    assert submitted(h.events[n:]) == [] and list(h.core.open_orders) == [old]
    (new,) = submitted(h.confirm(old))
    assert (new.intent.limit_price, new.intent.qty) == (99.5, 1.0)
    assert [o.limit_price for o in h.core.open_orders.values()] == [99.5]


def test_a_new_time_to_live_at_the_same_price_is_not_swallowed() -> None:
    """A limit signal at the price of the strategy's working limit changed nothing ("already
    there") even when it asked for a time to live the working one does not have: the
    strategy asked for a limit gone in 10 s and got one working until cancelled, which filled
    an hour later. The same terms still leave the order in its place in the queue."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))  # until filled or cancelled
    h.quote()
    (old,) = h.core.open_orders
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=10.0))
    h.quote()
    (new,) = h.core.open_orders.values()
    assert new.client_order_id != old and new.limit_price == 99.0
    assert new.expire_ts == new.ts_created + 10 * NS_PER_SECOND
    for _ in range(11):
        h.quote()
    assert not h.core.open_orders  # gone 10 s after it was sent, as asked
    # The boundary: the same price and terms leave the working order alone.
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=10.0))
    h.quote()
    (same,) = h.core.open_orders
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=10.0))
    h.quote()
    assert list(h.core.open_orders) == [same] and not any(
        c.client_order_id == same for c in h.cancels
    )


def test_a_signal_the_other_way_withdraws_the_request_still_waiting() -> None:
    """ema_cross asked to enter short (waiting for a person), then crossed back up a second
    later: "covering short", sized to nothing since the short had not been sent. The short's
    request stayed approvable, and an approve opened the position the strategy had already
    reversed out of (seen on the CLI, the demo's ema_cross in approve). A signal the other
    way now withdraws it, as it cancels a working limit the other way; the same side is the
    newer request's (superseded), another strategy's or symbol's stays."""
    h = SlowVenue(mode="approve")
    h.quote()
    h.strat.say(Action.SELL, LimitSpec(100.5))  # entering short: waits for a person
    h.quote()
    (short,) = h.core.approvals.pending()
    h.strat.say(Action.BUY, None, reduce_only=True)  # covering short: nothing to cover yet
    h.quote()
    assert not h.core.approvals.pending()
    (gone,) = [e.outcome for e in h.events if type(e) is ApprovalDecided]
    assert gone["approval_id"] == short.approval_id and gone["status"] == "rejected"
    assert gone["reason"].startswith("superseded by decision")
    again = h.core.approve(short.approval_id, by="op", expected_hash=short.intent_hash)
    assert again[0].outcome["status"] == "refused" and submitted(again) == []
    assert not h.core.open_orders and "X/USDT" not in h.core.portfolio.positions


def test_a_pause_judges_a_waiting_request_on_the_strategys_own_position() -> None:
    """Another strategy's long on the symbol made the paused strategy's short entry look like
    a reduction of the net position, so the pause kept it waiting, and an approve after the
    resume opened the paused strategy's short. A pause judges the strategy's own position,
    as it does for its resting limits."""
    from engine.types import Fill, Liquidity, Side

    h = SlowVenue(mode="approve")
    h.quote()
    other = Fill("f-other", "o-other", "other", "X/USDT", "sim", Side.BUY, 1.0, 100.0, 0.0,
                 Liquidity.TAKER, h.ts)  # fmt: skip
    h.handle(h.core.apply_fill(other))
    assert h.core.portfolio.positions["X/USDT"].qty == 1.0
    h.strat.say(Action.SELL, LimitSpec(100.5))  # s1 enters short: its own entry
    h.quote()
    (entry,) = h.core.approvals.pending()
    out = h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.core.now)
    assert [e.outcome["approval_id"] for e in out if type(e) is ApprovalDecided] == [
        entry.approval_id
    ]


# --------------------------------------------------------------- the invariant, as a property

EXAMPLES = int(os.environ.get("COCKPIT_REVIEW_LIM_EXAMPLES", "40"))


class Watched(SlowVenue):
    """Judges every order that actually goes to the venue: a strategy's order that adds
    exposure must come from a decision made after the last kill switch or pause."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.slow = True
        self.stop_seq = -1  # decisions numbered up to this were made before the last stop
        self.problems: list[str] = []

    def _hold(self, coid: str, now: int, reason: str = "canceled") -> list[OrderUpdate]:
        if self.slow:
            return super()._hold(coid, now, reason)
        return self.real_cancel(coid, now, reason)

    def handle(self, items: Any) -> None:
        for item in items:
            if type(item) is SubmitOrder and self.core.refused_at_send(item) is None:
                it = item.intent
                seq = int(it.decision_id.rsplit("-", 1)[1])
                if (
                    it.origin == IntentOrigin.STRATEGY
                    and seq <= self.stop_seq
                    and not self.core.reduces_exposure(it)
                ):
                    self.problems.append(f"{it.side} {it.qty} of decision {it.decision_id}")
                self.handle(self.core.on_broker(self.broker.submit(item.order, self.core.now)))
            else:
                super().handle([item])

    def stopped(self) -> None:
        self.stop_seq = self.core._decision_seq

    def confirm_all(self) -> None:
        held, self.held = list(dict.fromkeys(self.held)), []
        for coid in held:
            if coid in self.core.open_orders:
                self.confirm(coid)


_STEP = st.one_of(
    st.tuples(st.just("quote"), st.integers(-30, 30)),
    st.tuples(
        st.just("say"),
        st.sampled_from([Action.BUY, Action.SELL]),
        st.sampled_from([None, 0.0, 1.0, 3.0]),  # market, or a limit that many ticks behind
        st.sampled_from([None, 2.0]),  # its time to live
    ),
    st.tuples(st.just("confirm")),
    st.tuples(st.just("slow"), st.booleans()),
    st.tuples(st.just("kill"), st.sampled_from(["entries", "halt"])),
    st.tuples(st.just("release")),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("approve")),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(["auto", "approve"]), st.lists(_STEP, min_size=5, max_size=40))
def test_nothing_decided_before_a_stop_adds_exposure_after_it(mode: str, steps: list) -> None:
    h = Watched(mode)
    h.quote()
    mid = 100.0
    for step in steps:
        kind = step[0]
        core = h.core
        if kind == "quote":
            mid = max(95.0, min(105.0, mid + step[1] * 0.01))
            h.quote(bid=round(mid - 0.01, 2), ask=round(mid + 0.01, 2))
        elif kind == "say":
            _, action, ticks, ttl = step
            spec = None if ticks is None else LimitSpec(None, ticks, ttl_s=ttl)
            h.strat.say(action, spec)
            h.quote(bid=round(mid - 0.01, 2), ask=round(mid + 0.01, 2))
        elif kind == "confirm":
            h.confirm_all()
        elif kind == "slow":
            h.slow = step[1]
        elif kind == "kill":
            out = core.kill(step[1], by="t", reason="t", source="test")
            if out:
                h.stopped()
            h.handle(out)
        elif kind == "release":
            core.safety.release(by="t", reason="t", ts=core.now)
        elif kind == "pause":
            out = core.pause_strategy("s1", by="t", reason="t", ts=core.now)
            if out:
                h.stopped()
            h.handle(out)
        elif kind == "resume":
            core.safety.resume("s1", by="t", reason="t", ts=core.now)
        elif kind == "approve" and core.approvals.pending():
            h.handle(core.approve(core.approvals.pending()[0].approval_id, by="t"))
    h.slow = False
    h.confirm_all()
    h.quote(bid=round(mid - 0.01, 2), ask=round(mid + 0.01, 2))
    assert h.problems == [], h.problems


def test_an_exit_waiting_stays_when_the_strategy_enters_again() -> None:
    """The boundary of the withdrawal: long 1, its exit waiting, then a signal to enter
    again (the strategy reads itself flat, the exit counted): the exit stays approvable, so
    approving both leaves it long 1, not 2."""
    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    h.core.approvals._modes["s1"] = "approve"
    h.strat.say(Action.SELL, None, reduce_only=True)
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    assert sorted(p.intent.side for p in h.core.approvals.pending()) == ["buy", "sell"]


def test_a_move_across_a_pause_is_judged_on_the_strategys_own_position() -> None:
    """Another strategy's long made the paused strategy's moved short entry look like a
    reduction of the net position: sent after the resume. Judged on its own position."""
    from engine.types import Fill, Liquidity, Side

    h = SlowVenue()
    h.quote()
    other = Fill("f-other", "o-other", "other", "X/USDT", "sim", Side.BUY, 1.0, 100.0, 0.0,
                 Liquidity.TAKER, h.ts)  # fmt: skip
    h.handle(h.core.apply_fill(other))
    old = h.resting_limit(100.5, Action.SELL)  # s1's own short entry
    h.strat.say(Action.SELL, LimitSpec(100.4))
    h.quote()
    h.handle(h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.core.now))
    h.core.safety.resume("s1", by="op", reason="fine", ts=h.core.now)
    assert submitted(h.confirm(old)) == [] and not h.core.open_orders


# --------------------------------------------------------------- a backtest with gaps


def test_a_backtest_limit_never_fills_after_its_time_to_live_across_a_gap() -> None:
    """``--fill next-open``: a limit whose time to live ran out in a gap in the data (no bar
    came to expire it) met the next bar's open before the core saw that bar, and filled there,
    59 s after it should have been cancelled. It is cancelled first now."""
    import numpy as np

    from engine import paper_broker
    from engine.backtest import BacktestOptions, MarketData, run_backtest
    from engine.config import load_config

    n, minute, t0 = 3_000, 60 * NS_PER_SECOND, 1_700_000_000 * NS_PER_SECOND
    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.002, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.002, n)))
    keep = np.arange(n) % 4 != 1  # every fourth minute missing
    cols = [c[keep] for c in (open_, high, low, close, np.full(n, 1e6))]
    ts = (t0 + np.arange(n, dtype=np.int64) * minute)[keep]
    data = MarketData.from_bars(ts, *cols, symbol="BTC/USDT", timeframe_s=60)
    params = {
        "fast": 5,
        "slow": 20,
        "order_type": "limit",
        "limit_offset_ticks": -2,
        "limit_ttl_s": 61,
    }
    late: list[tuple[str, int]] = []
    real = paper_broker.PaperBroker._fill

    def watch(self: Any, w: Any, qty: float, price: float, liq: Any, at: int, out: Any) -> None:
        if 0 < w.order.expire_ts <= at:
            late.append((w.order.client_order_id, at - w.order.expire_ts))
        real(self, w, qty, price, liq, at, out)

    paper_broker.PaperBroker._fill = watch  # type: ignore[method-assign]
    try:
        o = BacktestOptions(
            strategy="ema_cross", params=params, fill="next-open", qty=0.1, warmup=50,
            breakers=False,
        )  # fmt: skip
        r = run_backtest(load_config(), data, o)
    finally:
        paper_broker.PaperBroker._fill = real  # type: ignore[method-assign]
    assert r.metrics.trades > 10 and late == []
