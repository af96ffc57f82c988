"""Event payloads (what the journal, JSON lines and the control socket carry) are exactly what
``dataclasses.asdict`` made of them, lists for tuples, None for a non-finite float: the payload
builder no longer calls asdict (its deep copy of every leaf was most of an intent's cost)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    BreakerChanged,
    DecisionMade,
    EngineBlocked,
    EngineEvent,
    ExitsChanged,
    FillReceived,
    IntentChecked,
    MarksRecorded,
    OperatorActed,
    OrderUpdated,
    QuotesRejected,
    RecordingDropped,
    SafetyChanged,
    SessionChanged,
    VenueChanged,
)
from engine.types import (
    Action,
    Decision,
    Fill,
    Liquidity,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    Verdict,
)


def _clean(value: Any) -> Any:
    """The payload's former second step, after asdict."""
    if isinstance(value, float) and value - value != 0.0:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def reference(ev: EngineEvent) -> dict[str, Any]:
    return _clean(asdict(ev))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (a list is not a tuple, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


INTENT = OrderIntent(
    "ck-1-1", "d1-1", "ema", "BTC/USDT", "sim", Side.BUY, 0.01, OrderType.MARKET, 60_000.5, 7
)
ORDER = Order(
    "ck-1-1",
    "ck-1-1",
    "ema",
    "BTC/USDT",
    "sim",
    Side.SELL,
    OrderType.LIMIT,
    0.5,
    59_999.0,
    OrderStatus.PARTIALLY_FILLED,
    1,
    2,
    0.25,
    60_000.0,
    0.1,
    True,
    "why",
    "v-9",
)
FILL = Fill(
    "f1", "ck-1-1", "ema", "BTC/USDT", "sim", Side.BUY, 0.01, 60_000.0, 0.06, Liquidity.TAKER, 3
)
EVENTS: list[EngineEvent] = [
    DecisionMade(
        Decision(
            "d1-1",
            7,
            "ema",
            "BTC/USDT",
            "sim",
            Action.BUY,
            "ema_cross_up",
            "crossed",
            0.4,
            {"close": 1.5, "atr": math.nan, "fast": math.inf},
            False,
        )
    ),
    IntentChecked(
        INTENT,
        (Verdict("cash", True, "OK", "enough cash"), Verdict("x", False, "NO_MARK", "none")),
        "denied",
        "detail",
    ),
    OrderUpdated(ORDER, 5),
    FillReceived(FILL, -1.25, 0.0),
    MarksRecorded(9, {"BTC/USDT": 60_000.0, "ETH/USDT": -math.inf}, 1.0, 2.0, 3.0, 4.0),
    SessionChanged(1, 2, "started", {"counters": {"fills": 3}, "pair": (1, 2.5), "x": None}),
    QuotesRejected(1, "BTC/USDT", "CROSSED", {"CROSSED": 2}),
    EngineBlocked(1, "disk full"),
    SafetyChanged(1, "kill_switch", "engine", {"level": None}, {"level": "halt"}, "me", "r", "c"),
    BreakerChanged(1, {"breaker": "loss", "tripped": True, "value": 3.0, "limit": [1, 2]}),
    ApprovalRequested(1, {"approval_id": "a1", "intent": asdict(INTENT), "est": 0.5}),
    ApprovalDecided(1, {"approval_id": "a1", "outcome": "expired"}),
    OperatorActed(1, "kill", "me", "tui", {"level": "halt"}, {}, {"k": [1]}, "why", True, "ok"),
    VenueChanged(1, "binance", "reconciled", "", {"diffs": [], "balances": {"USDT": 1.0}}),
    ExitsChanged(1, "ema", "BTC/USDT", "trailed", {"side": 1, "best": 61_000.0, "trail": None}),
    RecordingDropped(1, 5, 12, "the recorder's queue was full"),
    DecisionMade(
        Decision("d1-2", 8, "ema", "BTC/USDT", "sim", Action.SELL, "x", "y", 1.0, {}),
        {"levels": 20, "ts": 7, "age_ms": 0.001, "enc": "zlib+base64/json", "z": "eJw="},
    ),
]


def test_every_event_payload_is_what_asdict_made() -> None:
    # By name: a slotted dataclass is a second class object, and the first stays a subclass.
    names = {type(ev).__name__ for ev in EVENTS}
    assert names >= {c.__name__ for c in EngineEvent.__subclasses__()}, "an event lacks an example"
    for ev in EVENTS:
        payload = ev.payload()
        assert same(payload, reference(ev)), type(ev).__name__
        assert payload is not ev.payload(), "each payload is a fresh dict"


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from([Side.BUY, Action.HOLD, OrderStatus.NEW, Liquidity.MAKER]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.dictionaries(st.integers(), inner, max_size=3),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(info=st.dictionaries(st.text(max_size=6), values, max_size=5))
def test_any_nested_payload_is_what_asdict_made(info: dict[str, Any]) -> None:
    ev = SessionChanged(1, 1, "started", info)
    assert same(ev.payload(), reference(ev))
