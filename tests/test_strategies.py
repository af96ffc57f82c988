"""Built-in strategies on hand-made bars (trigger and just short of it), properties, registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.config import ConfigError, StrategyConfig
from engine.indicators import EMA
from engine.strategies import (
    BUILTINS,
    DonchianBreakout,
    EMACross,
    RSIReversion,
    Strategy,
    build_strategies,
    load_strategy_class,
)
from engine.types import Action, Bar, PositionView, Signal

FLAT = PositionView()
LONG = PositionView(qty=0.5, avg_price=100.0)
SHORT = PositionView(qty=-0.5, avg_price=100.0)
HINT = "use a built-in (ema_cross, rsi_reversion, donchian_breakout) or module:Class"


def bar(close: float, high: float | None = None, low: float | None = None, i: int = 0) -> Bar:
    return Bar(
        symbol="BTC/USDT",
        ts_open=i * 60_000_000_000,
        timeframe_s=60,
        open=close,
        high=close + 1.0 if high is None else high,
        low=close - 1.0 if low is None else low,
        close=close,
        volume=1.0,
    )


def run(strategy: Strategy, bars: list[Bar], position: PositionView = FLAT) -> list[Signal | None]:
    return [strategy.on_bar(b, position) for b in bars]


def closes(*values: float) -> list[Bar]:
    return [bar(v, i=i) for i, v in enumerate(values)]


def assert_well_formed(sig: Signal) -> None:
    assert 0.0 <= sig.confidence <= 1.0
    assert "close" in sig.inputs
    assert all(isinstance(v, float) and math.isfinite(v) for v in sig.inputs.values())


# --- ema_cross ------------------------------------------------------------------------------------

# EMA(1) is the close itself; EMA(3) has alpha 0.5, so every value below is exact in binary.
# slow: 10, 9.5, 9.5, 9.25 -> sides: tie (unknown), below, tie (touch), below.
EMA_PREFIX = (10.0, 10.0, 10.0, 9.0, 9.5, 9.0)


def ema_small(allow_short: bool = False) -> EMACross:
    return EMACross("ema", "BTC/USDT", {"fast": 1, "slow": 3}, allow_short=allow_short)


def test_ema_cross_up_triggers_buy_with_numbers_in_reason() -> None:
    s = ema_small()
    out = run(s, closes(*EMA_PREFIX, 11.0))
    assert out[:-1] == [None] * len(EMA_PREFIX)  # a touch (9.5 = 9.5) is not a cross
    sig = out[-1]
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (Action.BUY, "ema_cross_up", False)
    assert sig.inputs["ema_fast"] == 11.0
    assert sig.inputs["ema_slow"] == 10.125
    assert sig.inputs["close"] == 11.0
    assert "EMA(1) 11.00 crossed above EMA(3) 10.12" in sig.reason
    assert_well_formed(sig)


def test_ema_just_short_of_cross_is_silent() -> None:
    # Close 9.25 lands exactly on the slow EMA (9.25): a tie, not a cross.
    assert run(ema_small(), closes(*EMA_PREFIX, 9.25)) == [None] * 7
    # One tick higher crosses.
    sig = run(ema_small(), closes(*EMA_PREFIX, 9.26))[-1]
    assert sig is not None and sig.action is Action.BUY
    assert "EMA(1) 9.26 crossed above EMA(3) 9.25" in sig.reason


def test_ema_reason_keeps_near_tie_apart() -> None:
    # 9.254 vs 9.252 both print as 9.25 at two decimals; the reason must not read as a tie.
    sig = run(ema_small(), closes(*EMA_PREFIX, 9.254))[-1]
    assert sig is not None
    assert "EMA(1) 9.254 crossed above EMA(3) 9.252" in sig.reason


def test_ema_default_params_signal_exactly_at_the_cross() -> None:
    values = [100.0 - 0.5 * i for i in range(40)] + [80.5 + 1.0 * i for i in range(40)]
    fast, slow = EMA(10), EMA(30)
    sides = []
    for v in values:
        f, sl = fast.update(v), slow.update(v)
        sides.append(None if sl is None or f is None else (f > sl) - (f < sl))
    cross = next(i for i in range(1, len(values)) if sides[i - 1] == -1 and sides[i] == 1)
    s = EMACross("ema", "BTC/USDT")
    out = run(s, closes(*values))
    fired = [i for i, sig in enumerate(out) if sig is not None]
    assert fired == [cross]
    sig = out[cross]
    assert sig is not None
    assert f"EMA(10) {sig.inputs['ema_fast']:.2f} crossed above EMA(30) " in sig.reason
    assert f"{sig.inputs['ema_slow']:.2f}" in sig.reason


@pytest.mark.parametrize(
    ("position", "allow_short", "action", "reduce_only"),
    [
        (LONG, False, Action.SELL, True),
        (LONG, True, Action.SELL, True),
        (FLAT, False, Action.HOLD, False),
        (FLAT, True, Action.SELL, False),
        (SHORT, True, None, None),
    ],
)
def test_ema_cross_down_respects_position_and_allow_short(
    position: PositionView, allow_short: bool, action: Action | None, reduce_only: bool | None
) -> None:
    # After the cross up (bar 6, EMA(3) = 10.125), fall back below: EMA(3) = 10.0625 > 10.
    s = ema_small(allow_short)
    run(s, closes(*EMA_PREFIX, 11.0), FLAT)
    sig = s.on_bar(bar(10.0), position)
    if action is None:
        assert sig is None
        return
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (action, "ema_cross_down", reduce_only)
    assert "EMA(1) 10.00 crossed below EMA(3) 10.06" in sig.reason
    if action is Action.HOLD:
        assert "short entries disabled" in sig.reason
    assert_well_formed(sig)


def test_ema_cross_up_covers_short_and_ignores_long() -> None:
    sig = run(ema_small(True), closes(*EMA_PREFIX, 11.0), SHORT)[-1]
    assert sig is not None
    assert (sig.action, sig.reduce_only) == (Action.BUY, True)
    assert "covering short" in sig.reason
    assert run(ema_small(), closes(*EMA_PREFIX, 11.0), LONG)[-1] is None


# --- rsi_reversion --------------------------------------------------------------------------------

# RSI(2): changes +12, 0 -> 100; then -14 -> avg gain 3, avg loss 7 -> exactly 30.
RSI_TO_30 = (100.0, 112.0, 112.0, 98.0)


def rsi_small(allow_short: bool = False, **params: float) -> RSIReversion:
    return RSIReversion("rsi", "BTC/USDT", {"period": 2, **params}, allow_short=allow_short)


def test_rsi_exactly_at_lower_does_not_signal_one_tick_below_does() -> None:
    s = rsi_small()
    assert run(s, closes(*RSI_TO_30)) == [None] * 4  # RSI == 30.0 is not below 30
    out = run(rsi_small(), closes(*RSI_TO_30[:-1], 97.99))
    sig = out[-1]
    assert out[:-1] == [None] * 3
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (Action.BUY, "rsi_oversold", False)
    assert sig.inputs["rsi"] < 30.0 <= sig.inputs["prev_rsi"]
    assert "below 30" in sig.reason
    assert "RSI(2) 30.0 below" not in sig.reason  # rounding never prints 30.0 as "below 30"
    assert_well_formed(sig)


def test_rsi_crossing_from_exactly_lower_signals_with_numbers() -> None:
    s = rsi_small()
    run(s, closes(*RSI_TO_30))
    sig = s.on_bar(bar(97.0), FLAT)  # avg gain 1.5, avg loss 4 -> 27.27
    assert sig is not None and sig.action is Action.BUY
    assert sig.inputs["rsi"] == pytest.approx(100 * 1.5 / 5.5)
    assert "RSI(2) 27.3 below 30" in sig.reason
    assert sig.confidence == pytest.approx(0.5 + (30 - 100 * 1.5 / 5.5) / 30)
    assert_well_formed(sig)


def test_rsi_signals_once_per_zone_entry() -> None:
    s = rsi_small()
    run(s, closes(*RSI_TO_30))
    assert s.on_bar(bar(97.0), FLAT) is not None
    assert s.on_bar(bar(96.0), FLAT) is None  # still in the zone: no repeat


# RSI(2): changes -10, 0 -> 0; then +14 -> avg gain 7, avg loss 2.5 -> 73.7.
RSI_UP = (100.0, 90.0, 90.0, 104.0)


@pytest.mark.parametrize(
    ("position", "allow_short", "action", "reduce_only"),
    [
        (LONG, False, Action.SELL, True),
        (FLAT, False, Action.HOLD, False),
        (FLAT, True, Action.SELL, False),
        (SHORT, True, None, None),
    ],
)
def test_rsi_overbought_respects_position_and_allow_short(
    position: PositionView, allow_short: bool, action: Action | None, reduce_only: bool | None
) -> None:
    sig = run(rsi_small(allow_short), closes(*RSI_UP), position)[-1]
    if action is None:
        assert sig is None
        return
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (action, "rsi_overbought", reduce_only)
    assert "RSI(2) 73.7 above 70" in sig.reason
    if action is Action.HOLD:
        assert "short entries disabled" in sig.reason
    assert_well_formed(sig)


def test_rsi_upper_boundary_is_strict() -> None:
    rsi_value = 100 * 7 / 9.5
    assert run(rsi_small(upper=rsi_value), closes(*RSI_UP), LONG)[-1] is None
    below = math.nextafter(rsi_value, 0.0)
    assert run(rsi_small(upper=below), closes(*RSI_UP), LONG)[-1] is not None


# --- donchian_breakout ----------------------------------------------------------------------------

# Channel after three bars: upper 12, lower 8; ATR(3) = 2.
DC_WARM = [bar(9.0, 10.0, 8.0, 0), bar(10.0, 11.0, 9.0, 1), bar(11.0, 12.0, 10.0, 2)]


def dc_small(allow_short: bool = False) -> DonchianBreakout:
    return DonchianBreakout("dc", "BTC/USDT", {"period": 3}, allow_short=allow_short)


def test_donchian_close_at_previous_high_is_not_a_breakout() -> None:
    assert run(dc_small(), [*DC_WARM, bar(12.0, 12.5, 11.0, 3)]) == [None] * 4


def test_donchian_breakout_above_previous_high() -> None:
    s = dc_small()
    # The bar's own high (20) is not in the channel it is tested against.
    out = run(s, [*DC_WARM, bar(12.01, 20.0, 11.0, 3)])
    assert out[:3] == [None] * 3
    sig = out[3]
    assert s.warmup_bars == 3  # and the first possible signal came on bar index 3
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (Action.BUY, "donchian_breakout_up", False)
    assert "close 12.01 broke above the 3-bar high 12.00" in sig.reason
    assert sig.inputs["upper"] == 12.0 and sig.inputs["lower"] == 8.0 and sig.inputs["atr"] == 2.0
    assert sig.confidence == pytest.approx(0.01 / 2.0)
    assert_well_formed(sig)


def test_donchian_breakdown_when_long_exits() -> None:
    sig = run(dc_small(), [*DC_WARM, bar(7.99, 9.0, 7.5, 3)], LONG)[-1]
    assert sig is not None
    assert (sig.action, sig.rule, sig.reduce_only) == (Action.SELL, "donchian_breakout_down", True)
    assert "close 7.99 broke below the 3-bar low 8.00" in sig.reason


def test_donchian_breakdown_when_flat_needs_allow_short() -> None:
    down = [bar(7.99, 9.0, 7.5, 3), bar(7.0, 7.6, 6.9, 4), bar(7.2, 7.4, 7.0, 5)]
    down.append(bar(6.0, 7.0, 5.9, 6))
    out = run(dc_small(), [*DC_WARM, *down])
    hold = out[3]
    assert hold is not None and hold.action is Action.HOLD
    assert "short entries disabled" in hold.reason
    assert out[4] is None  # the next bar of the same run of breakdowns: said once
    assert out[5] is None  # inside the channel
    assert out[6] is not None and out[6].action is Action.HOLD  # a new run
    short = run(dc_small(allow_short=True), [*DC_WARM, *down])
    assert [s.action if s else None for s in short[3:]] == [
        Action.SELL,
        Action.SELL,
        None,
        Action.SELL,
    ]
    assert all(s is None or not s.reduce_only for s in short)


def test_donchian_breakout_up_covers_short() -> None:
    sig = run(dc_small(True), [*DC_WARM, bar(13.0, 13.0, 11.0, 3)], SHORT)[-1]
    assert sig is not None and (sig.action, sig.reduce_only) == (Action.BUY, True)


# --- properties over random bar series ------------------------------------------------------------

# A random walk: (return, high wick, low wick, position sign) per bar. Zero returns make ties and
# flat stretches likely; the occasional jump of up to 50% exercises the confidence clipping.
random_bars = st.tuples(
    st.floats(min_value=1e-3, max_value=1e6),
    st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(-0.02, 0.02), st.floats(-0.5, 0.5)),
            st.floats(0, 0.05),
            st.floats(0, 0.05),
            st.sampled_from([0, 1, -1]),
        ),
        min_size=40,
        max_size=200,
    ),
)


@st.composite
def any_strategy(draw: st.DrawFn) -> Strategy:
    kind = draw(st.sampled_from(sorted(BUILTINS)))
    allow_short = draw(st.booleans())
    if kind == "ema_cross":
        slow = draw(st.integers(2, 12))
        params: dict[str, float] = {"fast": draw(st.integers(1, slow - 1)), "slow": slow}
    elif kind == "rsi_reversion":
        lower = draw(st.floats(1, 60))
        upper = draw(st.floats(lower + 0.5, 99.5))
        params = {"period": draw(st.integers(2, 10)), "lower": lower, "upper": upper}
    else:
        params = {"period": draw(st.integers(2, 12))}
    return BUILTINS[kind]("prop", "X", params, allow_short=allow_short)


@settings(max_examples=300, deadline=None)
@given(strategy=any_strategy(), rows=random_bars)
def test_signals_are_always_well_formed(
    strategy: Strategy, rows: tuple[float, list[tuple[float, float, float, int]]]
) -> None:
    close, steps = rows
    for i, (ret, up, down, pos) in enumerate(steps):
        close *= 1.0 + ret
        b = bar(close, close * (1 + up), close * (1 - down), i)
        position = PositionView(qty=float(pos), avg_price=close if pos else 0.0)
        sig = strategy.on_bar(b, position)
        if sig is None:
            continue
        assert i >= strategy.warmup_bars
        assert_well_formed(sig)
        assert sig.inputs["close"] == close
        assert sig.reason and sig.rule
        if sig.reduce_only:  # an exit only ever shrinks the position it sees
            assert (sig.action, pos) in ((Action.BUY, -1), (Action.SELL, 1))
        if sig.action is Action.SELL and not sig.reduce_only:
            assert strategy.allow_short and pos == 0
        if sig.action is Action.BUY and not sig.reduce_only:
            assert pos == 0
        if sig.action is Action.HOLD:
            assert not strategy.allow_short and "short entries disabled" in sig.reason


# --- params ---------------------------------------------------------------------------------------


def test_params_defaults() -> None:
    assert EMACross.Params().model_dump() == {
        "slow": 30,
        "fast": 10,
        # How its entries go out (engine.strategies.base.OrderParams): market by default.
        "order_type": "market",
        "limit_offset_ticks": 0.0,
        "limit_ttl_s": None,
        "post_only": False,
        "time_in_force": "gtc",
    }
    assert RSIReversion.Params().model_dump() == {"period": 14, "upper": 70.0, "lower": 30.0}
    assert DonchianBreakout.Params().model_dump() == {"period": 20}
    assert EMACross("e", "X").warmup_bars == 30
    assert RSIReversion("r", "X").warmup_bars == 15
    assert DonchianBreakout("d", "X").warmup_bars == 20


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (EMACross, {"fast": 30, "slow": 30}),
        (EMACross, {"slow": 5}),  # default fast 10 is not below 5
        (EMACross, {"fast": 0}),
        (EMACross, {"fast": 2.0}),
        (EMACross, {"fast": True}),
        (RSIReversion, {"lower": 70, "upper": 30}),
        (RSIReversion, {"lower": 0}),
        (RSIReversion, {"upper": 100}),
        (RSIReversion, {"lower": math.inf}),
        (RSIReversion, {"period": 1}),
        (RSIReversion, {"lower": True}),
        (DonchianBreakout, {"period": 1}),
        (DonchianBreakout, {"period": 20, "extra": 1}),
    ],
)
def test_bad_params_rejected(cls: type[Strategy], params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        cls.Params.model_validate(params)


def test_strategy_rejects_params_of_another_model() -> None:
    with pytest.raises(TypeError, match="EMACrossParams"):
        EMACross("e", "X", RSIReversion.Params())


# --- registry -------------------------------------------------------------------------------------


@pytest.fixture
def user_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))


def cfg(kind: str, **kw: object) -> StrategyConfig:
    data: dict[str, object] = {"id": "s1", "kind": kind}
    data.update({"symbols": ["BTC/USDT"], **kw})
    return StrategyConfig.model_validate(data)


def problems(configs: list[StrategyConfig]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_strategies(configs)
    return info.value.problems


def test_builtins_and_loading() -> None:
    assert list(BUILTINS) == ["ema_cross", "rsi_reversion", "donchian_breakout"]
    for kind, cls in BUILTINS.items():
        assert load_strategy_class(kind) is cls
        assert cls.kind == kind
    assert load_strategy_class("engine.strategies.builtin:EMACross") is EMACross


def test_build_one_instance_per_symbol_and_skip_disabled() -> None:
    configs = [
        cfg("ema_cross", id="a", symbols=["BTC/USDT", "ETH/USDT"], params={"fast": 5}),
        cfg("no_such_kind", id="b", enabled=False),  # disabled: not even loaded
        cfg("donchian_breakout", id="c", allow_short=True),
    ]
    built = build_strategies(configs)
    assert [(s.strategy_id, s.symbol, type(s)) for s in built] == [
        ("a", "BTC/USDT", EMACross),
        ("a", "ETH/USDT", EMACross),
        ("c", "BTC/USDT", DonchianBreakout),
    ]
    assert built[0].params == EMACross.Params(fast=5, slow=30)
    assert built[0] is not built[1]
    assert [s.allow_short for s in built] == [False, False, True]


def test_unknown_kind() -> None:
    assert problems([cfg("ema_crossover")]) == [
        f"strategies[0].kind: unknown strategy 'ema_crossover'; did you mean 'ema_cross'? {HINT}"
    ]


def test_bad_import_path() -> None:
    assert problems([cfg("ema_cross", id="ok"), cfg("nope.mod:Thing")]) == [
        f"strategies[1].kind: cannot import 'nope.mod:Thing' (No module named 'nope'); {HINT}"
    ]


@pytest.mark.usefixtures("user_module_path")
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "user_strategy_example:Nothing",
            "cannot import 'user_strategy_example:Nothing' "
            f"('user_strategy_example' has no attribute 'Nothing'); {HINT}",
        ),
        (
            "user_strategy_example:NotAStrategy",
            "'user_strategy_example:NotAStrategy' is a class NotAStrategy, not a Strategy "
            "subclass; subclass engine.strategies.base.Strategy",
        ),
        (
            "user_strategy_example:NOT_A_CLASS",
            "'user_strategy_example:NOT_A_CLASS' is a int, not a Strategy subclass; "
            "subclass engine.strategies.base.Strategy",
        ),
        (
            "user_strategy_example:Unfinished",
            "'user_strategy_example:Unfinished' is abstract; implement on_bar",
        ),
        (
            "user_strategy_example:LooseStrategy",
            "'user_strategy_example:LooseStrategy'.Params must reject unknown keys "
            "(extra='forbid'); subclass StrategyParams",
        ),
        (":Thing", f"':Thing' is not an import path; {HINT}"),
    ],
)
def test_unusable_user_classes(kind: str, expected: str) -> None:
    assert problems([cfg(kind)]) == [f"strategies[0].kind: {expected}"]


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        (
            "ema_cross",
            {"fast": 40},
            "strategies[0].params.fast: got 40; fast must be less than slow (30)",
        ),
        (
            "ema_cross",
            {"fats": 5},
            "strategies[0].params.fats: unknown key; remove it or check its spelling "
            "(ema_cross takes: fast, limit_offset_ticks, limit_ttl_s, order_type, post_only, "
            "slow, time_in_force)",
        ),
        (
            "ema_cross",
            {"fast": math.nan},
            "strategies[0].params.fast: got nan; input should be a valid integer",
        ),
        (
            "rsi_reversion",
            {"lower": math.nan},
            "strategies[0].params.lower: got nan; input should be a finite number",
        ),
        (
            "rsi_reversion",
            {"lower": 80},
            "strategies[0].params.lower: got 80; lower must be less than upper (70)",
        ),
        (
            "donchian_breakout",
            {"period": 1},
            "strategies[0].params.period: got 1; input should be greater than or equal to 2",
        ),
    ],
)
def test_bad_params_name_the_field(kind: str, params: dict[str, object], expected: str) -> None:
    assert problems([cfg(kind, params=params)]) == [expected]


def test_secret_in_params_is_not_echoed() -> None:
    lines = problems([cfg("ema_cross", params={"api_key": "sk-123"})])
    assert lines == [
        "strategies[0].params.api_key: secrets are not allowed in config files; put it in an "
        "environment variable and name that variable with api_key_env"
    ]
    assert "sk-123" not in "\n".join(lines)


def test_all_problems_reported_together() -> None:
    lines = problems(
        [
            cfg("ema_cross", id="a", params={"fast": 40, "typo": 1}),
            cfg("nope", id="b"),
            cfg("rsi_reversion", id="a", symbols=["BTC/USDT", "BTC/USDT"]),
        ]
    )
    assert lines[0].startswith("strategies[0].params.fast: got 40;")
    assert lines[1].startswith("strategies[0].params.typo: unknown key;")
    assert lines[2].startswith("strategies[1].kind: unknown strategy 'nope';")
    assert lines[3] == "strategies[2].id: 'a' is already used by strategies[0]"
    assert lines[4] == "strategies[2].symbols: 'BTC/USDT' is listed twice"
    assert len(lines) == 5


@pytest.mark.usefixtures("user_module_path")
def test_user_strategy_by_import_path() -> None:
    kind = "user_strategy_example:CloseAbove"
    cls = load_strategy_class(kind)
    assert issubclass(cls, Strategy) and cls.__name__ == "CloseAbove"
    [s] = build_strategies([cfg(kind, params={"level": 105.0})])
    assert s.params.level == 105.0  # type: ignore[attr-defined]
    assert s.on_bar(bar(104.0), FLAT) is None
    sig = s.on_bar(bar(106.0), FLAT)
    assert sig is not None and sig.action is Action.BUY and "above 105.00" in sig.reason
    assert problems([cfg(kind, params={"level": -1})]) == [
        "strategies[0].params.level: got -1; input should be greater than 0"
    ]
    assert problems([cfg(kind, params={"levle": 1})]) == [
        "strategies[0].params.levle: unknown key; remove it or check its spelling "
        "(close_above takes: level)"
    ]


@pytest.mark.usefixtures("user_module_path")
def test_user_constructor_failure_is_a_config_problem() -> None:
    assert problems([cfg("user_strategy_example:Exploding")]) == [
        "strategies[0]: Exploding could not start for 'BTC/USDT' (RuntimeError: boom)"
    ]


def _fmt_apart_reference(a: float, b: float, decimals: int) -> tuple[str, str]:
    """The first spelling: add decimals until the printed values parse back in the same order."""
    d = decimals
    while True:
        sa, sb = format(a, f".{d}f"), format(b, f".{d}f")
        ra, rb = float(sa), float(sb)
        if d >= 10 or ((ra > rb) == (a > b) and (ra < rb) == (a < b)):
            return sa, sb
        d += 1


_near = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=500, deadline=None)
@given(
    a=_near,
    delta=st.one_of(st.just(0.0), st.floats(-1e-3, 1e-3), st.floats(-10.0, 10.0)),
    b=st.one_of(st.none(), _near),
    decimals=st.integers(0, 10),
)
def test_fmt_apart_keeps_the_order_as_it_always_did(
    a: float, delta: float, b: float | None, decimals: int
) -> None:
    """Near-ties (a cross, a breakout), signed zeros, NaN and infinities: the cheaper spelling
    (no parsing back) prints exactly what the reference does."""
    from engine.strategies.builtin import _fmt_apart

    other = a + delta if b is None else b
    assert _fmt_apart(a, other, decimals) == _fmt_apart_reference(a, other, decimals)
    assert _fmt_apart(-a, -other, decimals) == _fmt_apart_reference(-a, -other, decimals)


@pytest.mark.parametrize(
    ("a", "b"), [(-0.001, 0.001), (0.001, -0.001), (-0.0, 0.0), (30412.504, 30412.496)]
)
def test_fmt_apart_signed_zero_and_near_ties(a: float, b: float) -> None:
    from engine.strategies.builtin import _fmt_apart

    assert _fmt_apart(a, b, 2) == _fmt_apart_reference(a, b, 2)
