"""Review exitsend: a protective exit the engine itself refused at the send, and a limit's move
across a venue's reconciliation halt. Each test failed before its fix.

1. A stop-loss, take-profit or trailing stop the venue refuses is fired again 1, 2, 4 ... s
   later (at most a minute): a venue that keeps refusing is not hammered. An exit the
   engine's own send-time gate refused (the position or the orders on its side changed while
   its row was being committed: the runtime awaits the journal between the check and the
   send) backed off the same way, so the stop went out a second, or after earlier venue
   refusals up to a minute, after it could have. It now fires on the next event, sized anew;
   the venue's count of refusals in a row is left as it was; refused again at once, it waits
   a second (a race that repeats does not write a row on every quote).
2. A limit's move (cancel, then the new limit once the venue confirms the cancel) decided
   before a venue's reconciliation halt that was lifted before the venue's answer went out
   unjudged; it is now voided unless it reduces exposure, as across a kill or a pause. The
   voided move's denial code names what it waited across (VENUE_HALTED, STRATEGY_PAUSED;
   REDUCING_ONLY for a kill or a breaker's halt, what the engine does under the kill at
   entries), not REDUCING_ONLY for all.

Tried and held (no test added):
- A venue refusal after an engine refusal waits as the venue's count says (1, 2, 4 ... s),
  neither reset nor doubled by the engine's refusal (pinned below as a boundary).
- tests/test_exits_venue_answers.py: the venue's backoff (1, 2, 4 ... 60 s) and its reset on
  a close the venue takes are unchanged.
- An exit refused at the send while the other close is still in flight writes nothing more
  until it can go (_exposed counts the close in flight): no denial row per quote.
- A venue halt that is still on when the cancel is confirmed: the move is denied by the venue
  check as any order is (VENUE_HALTED), not voided twice.
- A halt of another venue does not void a move on this one.
"""

from __future__ import annotations

from typing import Any

from engine.config import parse_config
from engine.core import EngineCore, SubmitOrder
from engine.events import IntentChecked, OrderUpdated
from engine.exits import REFUSED_RETRY_MAX_NS, RETRY_NS
from engine.portfolio import Portfolio
from engine.types import (
    NS_PER_SECOND,
    Action,
    Instrument,
    Order,
    OrderStatus,
    OrderUpdate,
    Quote,
    Side,
)
from engine.vocabulary import IntentOrigin, IntentOutcome
from tests.test_exits import SYM, EnterOnce, Harness
from tests.test_limit_orders import Scripted

TENTH = NS_PER_SECOND // 10


# ------------------------------------------------------------- 1. an exit refused by the engine


def two_strategies(exits: dict[str, Any]) -> tuple[Harness, Scripted]:
    """s1 enters long 1 and holds it under ``exits``; s2 (a person approves its orders) sells
    when told to: an entry short of its own."""
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {SYM: {"initial_price": 100.0}}}},
            "strategies": [
                {
                    "id": sid,
                    "kind": "ema_cross",
                    "symbols": [SYM],
                    "timeframe_s": 1,
                    "approval": approval,
                    "allow_short": True,
                    "sizing": {"model": "fixed_qty", "qty": 1.0},
                    **({"exits": exits} if sid == "s1" else {}),
                }
                for sid, approval in (("s1", "auto"), ("s2", "approve"))
            ],
        }
    )
    s2 = Scripted("s2", SYM)
    inst = {SYM: Instrument(SYM, "sim", 0.01, 0.001, 0.0, 5.0)}
    h = Harness(EngineCore(cfg, [EnterOnce("s1", SYM), s2], inst, Portfolio(100_000.0)))
    h.quote(100.0)
    h.quote(100.0)  # the first bar closes: s1's entry goes out
    h.quote(100.0)  # ... and fills
    assert h.position == 1.0
    return h, s2


class Venue:
    """The paper venue with a switch: ``refuse_sells`` refuses every sell (a venue answer, as
    tests/test_exits_venue_answers.py does); ``refuse_next`` refuses the next order sent."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.real = h.broker.submit
        self.refuse_sells = False
        self.refuse_next = False
        self.sent: list[tuple[int, str]] = []  # (ts, client order id) of each order it saw
        h.broker.submit = self.submit  # type: ignore[method-assign]

    def submit(self, order: Order, now: int) -> list[Any]:
        self.sent.append((now, order.client_order_id))
        if self.refuse_next or (self.refuse_sells and order.side is Side.SELL):
            self.refuse_next = False
            own = order.copy()
            own.move_to(OrderStatus.REJECTED, now, "venue: -2019 margin is insufficient")
            return [OrderUpdate(own, now)]
        return self.real(order, now)


def quote_at(h: Harness, mid: float, ts: int) -> None:
    h.ts = ts - NS_PER_SECOND
    h.quote(mid)


def race(h: Harness, s2: Scripted, venue: Venue, mid: float, ts: int) -> list[Any]:
    """A quote at ``ts`` triggers s1's exit, and s2 asks to sell 1 (it waits for a person).
    While the exit's row is committed (the runtime awaits the journal between the check and
    the send, and a command runs meanwhile), a person approves s2's sell: it is checked and
    goes in flight. The exit is sent next and the engine's gate refuses it (with s2's sell in
    flight it would make the symbol short); the venue then refuses s2's sell. The position is
    still open, its stop still due. Returns the exit's submit (nothing: no exit fired)."""
    core = h.core
    h.ts = ts
    s2.say(Action.SELL, None)
    q = Quote(SYM, mid - 0.005, mid + 0.005, 50.0, 50.0, ts, ts, "sim")
    out = core.on_quote(q)
    assert out is not None
    fired = [it for it in out if type(it) is SubmitOrder]
    (ask,) = core.approvals.pending()
    approved = core.approve(ask.approval_id, by="op")
    h.handle(out)
    venue.refuse_next = True
    h.handle(approved)
    venue.refuse_next = False
    items = h.broker.on_quote(q)
    if items:
        h.handle(core.on_broker(items))
    return fired


def not_sent(h: Harness) -> list[Order]:
    return [
        e.order
        for e in h.events
        if type(e) is OrderUpdated
        and e.order.status is OrderStatus.REJECTED
        and e.order.reason.startswith("not sent:")
    ]


def exits_sent(h: Harness) -> list[IntentChecked]:
    return [
        e
        for e in h.intents(IntentOrigin.EXIT)
        if e.outcome == IntentOutcome.SUBMITTED  # (refused at the send or not)
    ]


def test_a_stop_the_engine_refused_at_the_send_fires_on_the_next_quote() -> None:
    """The stop-loss triggered as a person approved another strategy's sell; the engine
    refused the stop at the send (with that sell in flight it would have sold twice) and the
    venue then refused the sell. The next quote, a tenth of a second on, finds the position
    open below its stop: the stop goes then, not a second later (the venue's backoff was
    applied to the engine's own refusal). One refused row, no denial."""
    h, s2 = two_strategies({"stop_loss_pct": 2.0})
    venue = Venue(h)
    t = h.ts + NS_PER_SECOND
    assert len(race(h, s2, venue, 97.0, t)) == 1
    (refused,) = not_sent(h)
    assert refused.reason.startswith("not sent: reduce-only sell 1"), refused.reason
    assert h.position == 1.0
    quote_at(h, 97.0, t + TENTH)  # the first quote after: the stop goes
    assert venue.sent[-1] == (t + TENTH, exits_sent(h)[-1].intent.intent_id)
    assert len(exits_sent(h)) == 2 and len(not_sent(h)) == 1
    assert not [e for e in h.intents() if e.outcome == IntentOutcome.DENIED]
    quote_at(h, 97.0, t + 2 * TENTH)
    assert h.position == 0.0


def test_after_venue_refusals_the_engines_refusal_does_not_make_the_stop_wait_a_minute() -> None:
    """Six refusals by the venue in a row (1, 2, 4, 8, 16, 32 s apart) put the next one a
    minute out. The seventh attempt, now that the venue takes orders again, met the race
    above and the engine's refusal: counted as the venue's seventh, the stop waited another
    60 s below its level. It goes on the next quote."""
    h, s2 = two_strategies({"stop_loss_pct": 2.0})
    venue = Venue(h)
    venue.refuse_sells = True
    st = h.core.slots[("s1", SYM)].exits
    assert st is not None
    for _ in range(40):  # tries 1, 3, 7, 15 and 31 s after the first
        h.quote(97.0)
    assert st.refused == 6 and len(venue.sent) == 6
    venue.refuse_sells = False
    due = st.retry_ts
    assert due - h.ts <= REFUSED_RETRY_MAX_NS
    assert len(race(h, s2, venue, 97.0, due)) == 1
    assert h.position == 1.0 and len(not_sent(h)) == 1
    quote_at(h, 97.0, due + TENTH)
    assert venue.sent[-1] == (due + TENTH, exits_sent(h)[-1].intent.intent_id)
    quote_at(h, 97.0, due + 2 * TENTH)
    assert h.position == 0.0


def test_a_venue_refusal_after_the_engines_waits_as_the_venues_count_says() -> None:
    """The boundary on the venue's side: refused by the venue three times in a row (1, 2, 4
    s), then by the engine, then by the venue again: that fourth venue refusal waits 8 s (the
    engine's refusal neither restarts the count nor adds to it): not at 7.9 s, at 8 s."""
    h, s2 = two_strategies({"stop_loss_pct": 2.0})
    venue = Venue(h)
    venue.refuse_sells = True
    st = h.core.slots[("s1", SYM)].exits
    assert st is not None
    for _ in range(7):  # tries at +1, +2, +4 s
        h.quote(97.0)
    assert st.refused == 3
    venue.refuse_sells = False
    due = st.retry_ts
    race(h, s2, venue, 97.0, due)
    assert st.refused == 3 and len(not_sent(h)) == 1
    venue.refuse_sells = True
    quote_at(h, 97.0, due + TENTH)  # fired again at once: the venue refuses it
    assert st.refused == 4
    refused_at = due + TENTH
    venue.refuse_sells = False
    n = len(venue.sent)
    quote_at(h, 97.0, refused_at + 8 * NS_PER_SECOND - TENTH)
    assert len(venue.sent) == n and h.position == 1.0
    quote_at(h, 97.0, refused_at + 8 * NS_PER_SECOND)
    assert venue.sent[n:] == [(refused_at + 8 * NS_PER_SECOND, exits_sent(h)[-1].intent.intent_id)]


def test_an_exit_refused_by_the_engine_again_at_once_waits_a_second() -> None:
    """The other boundary: the same race on the next quote too. A race that repeats must not
    write a refused order on every quote: the third attempt waits a second (RETRY_NS), as an
    exit denied at its check does, never the venue's doubling."""
    h, s2 = two_strategies({"stop_loss_pct": 2.0})
    venue = Venue(h)
    t = h.ts + NS_PER_SECOND
    race(h, s2, venue, 97.0, t)
    assert len(race(h, s2, venue, 97.0, t + TENTH)) == 1
    assert len(not_sent(h)) == 2
    assert race(h, s2, venue, 97.0, t + TENTH + RETRY_NS - 1) == []
    quote_at(h, 97.0, t + TENTH + RETRY_NS)
    assert venue.sent[-1] == (t + TENTH + RETRY_NS, exits_sent(h)[-1].intent.intent_id)
    quote_at(h, 97.0, t + TENTH + RETRY_NS + TENTH)
    assert h.position == 0.0
    st = h.core.slots[("s1", SYM)].exits
    assert st is None or st.refused == 0
