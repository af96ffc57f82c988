"""Configuration: pydantic models for the whole TOML file, and a loader with one-line errors.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting.
Secrets never live in the file: a venue names the environment variables that hold them.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from engine.tomlfile import TomlFileError, read_toml
from engine.types import number_misread
from engine.vocabulary import AlertKindName, KillLevelName, kill_file_problem

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
# Durations become integer nanoseconds (int64 in numpy): a year bounds every one of them far
# inside that range, and no setting means more than that.
MAX_DURATION_S = 365 * 86_400
Seconds = Annotated[float, Field(gt=0, le=MAX_DURATION_S, allow_inf_nan=False)]
# A window a limit counts in (an order throttle's, the rolling loss's) or a breaker's auto
# re-arm cooldown: at least a second. Below that the limit held for no time at all:
# per_seconds = 1e-10 was a 0 ns window that never counted an order (no throttle), and
# rearm = "auto" with cooldown_s = 0 lifted a breaker's halt on the tick that tripped it.
WindowSeconds = Annotated[float, Field(ge=1, le=MAX_DURATION_S, allow_inf_nan=False)]
Millis = Annotated[float, Field(gt=0, le=MAX_DURATION_S * 1000, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
# Prices, sizes and money: a quadrillion is beyond any instrument or account (it is the
# backtest's "no limit") and keeps their products (notional, equity) far from float overflow.
MAX_AMOUNT = 1e15
Amount = Annotated[float, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)]
NonNegAmount = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Bps = Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]  # 10,000 bps = 100 %
PositiveBps = Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=1_000_000_000)]
# A speed-up over real time: from a thousand times slower to as fast as a machine goes.
SpeedFactor = Annotated[float, Field(ge=0.001, le=1e9, allow_inf_nan=False)]
# A fixed simulated start: its history must begin after 1970 and its clock fit int64 ns.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_START = datetime(2200, 1, 1, tzinfo=UTC)
MAX_HISTORY_S = 20 * 365 * 86_400
STRATEGY_ID = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,39}$"
SYMBOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}(/[A-Za-z0-9][A-Za-z0-9._:-]{0,31})?")


def _path_text(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"must name a {what}, not an empty string")
    if "\x00" in value:
        raise ValueError(f"must not contain a NUL character; name a {what}")
    return value


def _path_named(value: str, what: str) -> str:
    """A path in the config file: as :func:`_path_text`, and never starting with ``~``."""
    _path_text(value, what)
    if value.startswith("~"):
        # Only a shell expands ~: "~/cockpit/data" was a folder named "~" under the directory
        # the engine started in, where `cockpit kill --config` started elsewhere never looked.
        home = os.path.expanduser(value)
        instead = f" ({home})" if home != value else ""
        raise ValueError(
            f"starts with ~, which a config file does not expand (a shell does); write the "
            f"whole path{instead}"
        )
    return value


DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        problem = number_misread(field.annotation, value) if field is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value


class SymbolSpec(Strict):
    """A simulated instrument: where it starts and how it behaves."""

    initial_price: Amount
    annual_volatility: Annotated[float, Field(gt=0, le=10)] = 0.6
    spread_bps: PositiveBps = 1.0
    tick_size: Amount = 0.01
    lot_size: Amount = 0.0001
    min_qty: NonNegAmount = 0.0
    min_notional: NonNegAmount = 5.0
    typical_size: Amount = 1.0
    jump_probability: Annotated[float, Field(ge=0, le=0.1)] = 0.00003
    jump_size_bps: Bps = 50.0


class SimulatedMarketConfig(Strict):
    seed: Seed = 42
    # Average time between quotes for each symbol, in milliseconds of simulated time.
    quote_interval_ms: Annotated[float, Field(ge=1, le=86_400_000, allow_inf_nan=False)] = 250.0
    # "realtime" paces the stream on the wall clock; "max" runs as fast as possible; a number is
    # a speed-up factor over real time.
    speed: Literal["realtime", "max"] | SpeedFactor = "realtime"
    # "now" starts the simulated clock at the wall clock; an ISO-8601 UTC time makes runs
    # repeatable.
    start: str = "now"
    # Bars of history generated before the live stream so strategies start warm.
    history_bars: Annotated[int, Field(ge=0, le=100_000)] = 200
    history_timeframe_s: Annotated[int, Field(ge=1, le=86_400)] = 1
    symbols: dict[str, SymbolSpec] = Field(
        default_factory=lambda: {
            "BTC/USDT": SymbolSpec(initial_price=60_000.0, typical_size=0.5, lot_size=0.00001),
            "ETH/USDT": SymbolSpec(initial_price=3_000.0, typical_size=5.0, lot_size=0.0001),
            "SOL/USDT": SymbolSpec(initial_price=150.0, typical_size=50.0, lot_size=0.001),
        }
    )

    @field_validator("start")
    @classmethod
    def _start_is_time(cls, value: str) -> str:
        if value != "now":
            try:
                when = datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(
                    "must be 'now' or an ISO-8601 time like 2024-01-01T00:00:00Z"
                ) from exc
            when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
            if not EARLIEST_START <= when < LATEST_START:
                raise ValueError(
                    f"must be 'now' or a time from {EARLIEST_START.year} to {LATEST_START.year}"
                )
        return value

    @field_validator("symbols")
    @classmethod
    def _has_symbols(cls, value: dict[str, SymbolSpec]) -> dict[str, SymbolSpec]:
        if not value:
            raise ValueError("needs at least one symbol")
        for name in value:
            if not SYMBOL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a symbol name like BTC/USDT")
        return value

    @model_validator(mode="after")
    def _history_fits(self) -> SimulatedMarketConfig:
        span = self.history_bars * self.history_timeframe_s
        if span > MAX_HISTORY_S:
            raise ValueError(
                f"history_bars x history_timeframe_s is {span:,} s of warm-up history, over the "
                f"{MAX_HISTORY_S // (365 * 86_400)}-year limit; lower one of them"
            )
        return self


class ReplayConfig(Strict):
    path: str
    # "bars": the 1-minute OHLCV CSV (timestamp,open,high,low,close,volume);
    # "quotes": a Binance bookTicker CSV
    # (local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty);
    # "recording": what a [record] engine wrote (a day file, or a folder under DATA/record):
    # replayed payload by payload through the venue feed's own validation, books included.
    kind: Literal["bars", "quotes", "recording"]
    symbol: str = "BTC/USDT"
    speed: Literal["recorded", "max"] | SpeedFactor = "max"
    tick_size: Amount = 0.01
    lot_size: Amount = 0.00001
    min_notional: NonNegAmount = 5.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _path_named(value, "market data file")


class ValidationConfig(Strict):
    """Feed-boundary rules. A quote older than ``stale_after_s`` is not a reference price."""

    stale_after_s: Seconds = 5.0
    max_spread_bps: PositiveBps = 500.0


class MarketConfig(Strict):
    # "simulated" (built in, no network), "replay" (a recorded file) or "venue" (the venues'
    # live public streams; testnet and live always read them).
    source: Literal["simulated", "replay", "venue"] = "simulated"
    simulated: SimulatedMarketConfig = Field(default_factory=SimulatedMarketConfig)
    replay: ReplayConfig | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _replay_needs_section(self) -> MarketConfig:
        if self.source == "replay" and self.replay is None:
            raise ValueError("source = 'replay' needs a [market.replay] section with path and kind")
        return self


class RecordConfig(Strict):
    """``[record]``: raw market data recording (engine.marketdata.recording) and the L2 book
    kept with each acting decision (engine.bookshot)."""

    # Record every payload the venue feeds receive under DATA/record (off by default).
    enabled: bool = False
    # Payloads waiting for the writer thread; beyond it they are dropped (counted, alerted).
    queue_size: Annotated[int, Field(ge=100, le=10_000_000)] = 100_000
    # The writer flushes its buffered lines at most this often.
    flush_interval_s: Annotated[float, Field(ge=0.01, le=60.0, allow_inf_nan=False)] = 0.2
    # Also record each symbol's public trades (websocket feeds whose venue streams them).
    trades: bool = True
    # Levels a side of the book stored with each acting decision (0: none are stored).
    decision_book_levels: Annotated[int, Field(ge=0, le=1000)] = 20


class PaperBrokerConfig(Strict):
    """A fill model that does not flatter: latency, far-side fills, impact beyond displayed size."""

    latency_median_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 40.0
    latency_sigma: Annotated[float, Field(ge=0, le=3, allow_inf_nan=False)] = 0.5  # log-normal
    taker_fee_bps: Bps = 10.0
    maker_fee_bps: Bps = 2.0
    # L1 impact model (used when no fresh L2 depth is there): beyond the displayed size an order
    # walks impact levels, each this many bps further from the touch and each holding the
    # displayed size or ``impact_level_notional`` (quote currency), whichever is more.
    # Calibrated on the shared Binance BTCUSDT capture (bench/fill_model.py --calibrate): the
    # old 5 bps per displayed size overcharged 5 BTC by ~3 bps at the median and 20 BTC by ~17.
    impact_bps_per_size: Bps = 0.8
    impact_level_notional: NonNegAmount = 200_000.0
    # L2 depth handed to the broker (PaperBroker.on_depth) is walked only while it is at most
    # this much older than the quote being filled; an older book falls back to the L1 model.
    depth_max_age_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 1_000.0
    seed: Seed = 7


class PortfolioConfig(Strict):
    starting_cash: Amount = 100_000.0
    # A currency code (USDT, USD, 1INCH): it names balances at the venue and every amount shown.
    quote_currency: str = "USDT"

    @field_validator("quote_currency")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9]{1,16}", value):
            raise ValueError("must be a currency code of 1-16 letters and digits, such as USDT")
        return value


class ThrottleConfig(Strict):
    max_orders: Count
    per_seconds: WindowSeconds


class RiskLimits(Strict):
    """Pre-trade limits. Fractions are of current equity."""

    max_order_notional: Amount = 10_000.0
    max_position_fraction: Fraction = 0.10
    max_open_positions: Count = 5
    max_gross_exposure_fraction: Annotated[float, Field(gt=0, le=10)] = 0.5
    price_collar_pct: Annotated[float, Field(gt=0, le=50)] = 1.0
    stale_quote_s: Seconds = 5.0
    strategy_throttle: ThrottleConfig = ThrottleConfig(max_orders=10, per_seconds=60)
    global_throttle: ThrottleConfig = ThrottleConfig(max_orders=30, per_seconds=60)


# What each sizing model reads (engine/sizing.py).
SIZING_INPUTS: dict[str, frozenset[str]] = {
    "fixed_qty": frozenset({"qty"}),
    "fixed_fraction": frozenset({"fraction"}),
    "volatility": frozenset({"risk_fraction", "atr_multiple"}),
    "kelly": frozenset({"win_rate", "payoff_ratio", "kelly_fraction"}),
}


class SizingConfig(Strict):
    model: Literal["fixed_qty", "fixed_fraction", "volatility", "kelly"] = "fixed_fraction"
    qty: Amount | None = None  # fixed_qty
    fraction: Fraction = 0.02  # fixed_fraction: notional as a fraction of equity
    risk_fraction: Fraction = 0.01  # volatility: equity risked per ATR multiple
    atr_multiple: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 2.0
    win_rate: Annotated[float, Field(ge=0, le=1)] = 0.55  # kelly inputs
    payoff_ratio: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 1.2
    kelly_fraction: Fraction = 0.25

    @model_validator(mode="after")
    def _qty_for_fixed(self) -> SizingConfig:
        if self.model == "fixed_qty" and self.qty is None:
            raise ValueError("model = 'fixed_qty' needs qty")
        return self


class RollingLossConfig(Strict):
    max_loss_pct: Annotated[float, Field(gt=0, le=100)] = 2.0  # of equity at the window's start
    window_s: WindowSeconds = 3600.0


class BreakersConfig(Strict):
    """Circuit breakers. A trip pauses the strategy (or the engine, for global breakers)."""

    consecutive_losses: Count = 3
    # Losing trades in a row across all strategies that halt the whole engine.
    global_consecutive_losses: Count = 8
    rolling_loss: RollingLossConfig = Field(default_factory=RollingLossConfig)
    orders_per_minute: Count = 20
    # Signals per hour above this multiple of the strategy's baseline look like a runaway loop.
    signal_rate_multiple: Annotated[float, Field(gt=1, le=1e6, allow_inf_nan=False)] = 3.0
    baseline_signals_per_hour: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] = 60.0
    consecutive_rejects: Count = 3
    # Realised slippage above the model's estimate by more than this percentage trips.
    slippage_excess_pct: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 50.0
    slippage_window_fills: Count = 10
    clock_drift_warn_ms: Millis = 100.0
    clock_drift_halt_ms: Millis = 500.0
    # After this many automated fills with no person reviewing them, the strategy pauses.
    max_unreviewed_fills: Count = 50
    rearm: Literal["auto", "manual"] = "manual"
    cooldown_s: WindowSeconds = 300.0

    @model_validator(mode="after")
    def _drift_order(self) -> BreakersConfig:
        if self.clock_drift_warn_ms >= self.clock_drift_halt_ms:
            raise ValueError("clock_drift_warn_ms must be below clock_drift_halt_ms")
        return self


# Names the engine gives to what is no strategy: a strategy by one of these ids shared its
# breakers with the engine-wide ones (one trip key, so a strategy's loss streak and the whole
# engine's halt overwrote each other and re-armed together), or its book with the orders and
# positions a person adopted from a venue.
RESERVED_STRATEGY_IDS = {
    "global": "the engine-wide breakers (cockpit rearm global)",
    "operator": "the orders and positions adopted from a venue (cockpit resolve ... adopt)",
}

# Breakers of the whole engine (every strategy's losses together, the clock against the
# venue's): [safety.breakers] sets them; a strategy's ``breakers`` override cannot.
GLOBAL_ONLY_BREAKERS = frozenset(
    {"global_consecutive_losses", "clock_drift_warn_ms", "clock_drift_halt_ms"}
)


class KillSwitchConfig(Strict):
    """Automatic kill: engaged on the first quote at which a loss limit is reached."""

    daily_loss_limit_pct: Annotated[float, Field(gt=0, le=100)] = 5.0
    drawdown_limit_pct: Annotated[float, Field(gt=0, le=100)] = 15.0
    auto_level: KillLevelName = "halt"
    kill_file: str = "KILL"  # in the data directory; checked at least once a second
    poll_s: Annotated[float, Field(ge=0.01, le=1)] = 0.5

    @field_validator("kill_file")
    @classmethod
    def _file_name(cls, value: str) -> str:
        _path_text(value, "file")
        problem = kill_file_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ApprovalConfig(Strict):
    ttl_s: Seconds = 30.0
    # On approval the checks run again; a price move beyond this since the intent rejects it.
    price_tolerance_pct: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 0.5
    # After this many approved trades an operator may switch a strategy to auto (never the engine).
    auto_after_approved: Annotated[int, Field(ge=0, le=1_000_000_000)] = 10


class LiveConfig(Strict):
    """The first trades in live mode run under reduced canary limits."""

    canary_trades: Annotated[int, Field(ge=0, le=1_000_000_000)] = 5
    canary_max_order_notional: Amount = 100.0


class SafetyConfig(Strict):
    breakers: BreakersConfig = Field(default_factory=BreakersConfig)
    kill_switch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)


class ExitsConfig(Strict):
    """Protective exits attached to every position the strategy opens (engine/exits.py).

    Percentages are of the entry price (the average entry of the strategy's position); the
    trailing stop is a Chandelier stop, ``trailing_atr`` x ATR(``atr_period``) of the strategy's
    bars from the best price since entry; the time stop counts bars of the strategy's timeframe.
    Each is optional; none set means no exits.
    """

    stop_loss_pct: Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)] | None = None
    take_profit_pct: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)] | None = None
    trailing_atr: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    atr_period: Annotated[int, Field(ge=1, le=10_000)] | None = None
    time_stop_bars: Annotated[int, Field(ge=1, le=100_000_000)] | None = None

    @model_validator(mode="after")
    def _period_needs_trail(self) -> ExitsConfig:
        if self.atr_period is not None and self.trailing_atr is None:
            raise ValueError(
                "atr_period is set but trailing_atr is not: the period is the trailing stop's "
                "ATR; set trailing_atr too or remove atr_period"
            )
        return self

    @property
    def any(self) -> bool:
        """Is at least one exit set."""
        return (
            self.stop_loss_pct is not None
            or self.take_profit_pct is not None
            or self.trailing_atr is not None
            or self.time_stop_bars is not None
        )


class StrategyConfig(Strict):
    # Typed in `cockpit pause ID`: never starting with "-", which the command line reads as an
    # option ("-x" could not be paused or resumed without a "--" before it).
    id: str
    # A built-in id (ema_cross, rsi_reversion, donchian_breakout) or an import path module:Class.
    kind: str
    symbols: list[str] = Field(min_length=1)
    timeframe_s: Annotated[int, Field(ge=1, le=86_400)] = 1
    params: dict[str, Any] = Field(default_factory=dict)
    sizing: SizingConfig = Field(default_factory=SizingConfig)
    allow_short: bool = False
    enabled: bool = True
    # "approve": every order waits for a person; "auto": orders go straight out. Live mode
    # always starts in approve, whatever this says.
    approval: Literal["approve", "auto"] = "approve"
    # Per-strategy overrides of [safety.breakers], e.g. { consecutive_losses = 5 }.
    breakers: dict[str, Any] = Field(default_factory=dict)
    # Protective exits (stop-loss, take-profit, trailing and time stops) on its positions.
    exits: ExitsConfig | None = None

    @field_validator("id")
    @classmethod
    def _id_typed(cls, value: str) -> str:
        if not re.fullmatch(STRATEGY_ID, value):
            raise ValueError(
                "must be 1-40 letters, digits, _ . - not starting with - (it is typed in "
                "cockpit pause ID), like ema_cross"
            )
        return value

    @field_validator("symbols")
    @classmethod
    def _symbol_names(cls, value: list[str]) -> list[str]:
        # On a venue's market the names were not checked: "", "BTC/USDT " or "BTC USDT"
        # passed `config check` and the start failed on them (a symbol is also a folder of
        # the recordings, and what `cockpit flatten` types).
        for name in value:
            if not SYMBOL_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a market symbol like BTC/USDT (letters, digits and . _ - "
                    "on each side of one /, then :SETTLE for a derivative; no spaces)"
                )
        return value

    @field_validator("sizing")
    @classmethod
    def _sizing_read(cls, sizing: SizingConfig) -> SizingConfig:
        """A setting of another sizing model was accepted and ignored: `sizing = { qty =
        0.001 }` traded 2% of equity (the default fixed_fraction), not 0.001. (One left at its
        default changes nothing, and a config dumped and read again has them all.)"""
        fields = SizingConfig.model_fields
        unused = sorted(
            name
            for name in sizing.model_fields_set - SIZING_INPUTS[sizing.model] - {"model"}
            if getattr(sizing, name) != fields[name].default  # a dumped config's defaults
        )
        if unused:
            wanted = ", ".join(sorted(SIZING_INPUTS[sizing.model]))
            users = sorted({m for m, keys in SIZING_INPUTS.items() if set(unused) & keys})
            one = len(unused) == 1
            raise ValueError(
                f"{', '.join(unused)} {'is' if one else 'are'} not used by model = "
                f"'{sizing.model}' (it reads {wanted}); remove {'it' if one else 'them'} or "
                f"set model = {' or '.join(repr(m) for m in users)}"
            )
        return sizing


# The name of an environment variable (where a secret lives), never the secret itself.
def looks_like_a_key(text: str) -> bool:
    """True for a value more likely a key than a variable's name: 16 characters or more, no
    underscore, letters and digits, the character class (upper, lower, digit) changing at
    least every third character, as in a random key (binance's 64 and bybit's 18 letters and
    digits) and unlike a name (BINANCE_API_KEY, BinanceTestnetApiKey, BYBITKEY1234567890).
    Such a value is never echoed, and an ``*_env`` field refuses it."""
    if len(text) < 16 or not (text.isascii() and text.isalnum()):
        return False  # short, or holds _ (a name) or other signs (refused as no name at all)
    if text.isalpha() or text.isdigit():
        return False
    if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", text):
        # Hex with letters and digits: kucoin's 24-character key, okx's 32-character secret.
        # One in ten of them changed class too seldom for the rule below and was echoed.
        return True
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" for c in text]
    changes = sum(a != b for a, b in itertools.pairwise(kinds))
    return changes * 3 >= len(text)


def may_be_a_key(text: str) -> bool:
    """A valid variable name that could still be a key pasted in its place (16 letters and
    digits or more, no underscore: bybit's 18, an all-letter one): accepted as a name, but never
    repeated in a message (``looks_like_a_key`` cannot tell every one from a name)."""
    return len(text) >= 16 and text.isascii() and text.isalnum()


def _env_name(value: str) -> str:
    if looks_like_a_key(value):
        raise ValueError("looks like a key")  # phrased by describe_error, never echoed
    return value


EnvName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), AfterValidator(_env_name)
]


class VenueConfig(Strict):
    """A ccxt venue. Keys come from the named environment variables, never from this file."""

    exchange: str
    testnet: bool = True
    api_key_env: EnvName | None = None
    secret_env: EnvName | None = None
    password_env: EnvName | None = None
    # Quotes: "auto" streams over websockets (ccxt.pro) where the venue has them, else polls
    # REST within the venue's rate limit; "websocket" or "rest" force one.
    market_data: Literal["auto", "websocket", "rest"] = "auto"
    # Which stream gives bid/ask: tickers, the best-bid/offer stream, or the top of the L2 book.
    quote_source: Literal["ticker", "bidask", "book"] = "ticker"
    # Dead-man switch where the venue has one (ccxt cancelAllOrdersAfter): the venue cancels
    # every order if no heartbeat arrives for this long. 0 turns it off.
    deadman_s: Annotated[float, Field(ge=0, le=600)] = 60.0
    # Protective stops (a strategy's stop-loss or trailing stop) as stop orders resting at the
    # venue, placed after the entry fills and moved with the trail, so they still protect the
    # position while the engine is down (binance only for now: see docs/operations.md).
    # False: the engine watches them (engine-side).
    native_stops: bool = False
    # Where a venue takes only stop-limit orders (binance spot: STOP_LOSS_LIMIT, no STOP_LOSS),
    # the limit sits this far beyond the trigger; a gap past it leaves the stop unfilled.
    native_stop_limit_bps: Annotated[float, Field(gt=0, le=2_000)] = 100.0
    # How often to measure our clock against the venue's (feeds the clock-drift breaker).
    clock_check_s: Annotated[float, Field(ge=5, le=3600)] = 60.0
    # The strategy symbols this venue trades (default: all of them). With several venues, each
    # symbol must belong to exactly one: a strategy's orders go to the venue of its symbol.
    symbols: list[str] | None = None
    # Prefix of every client order id, so two engines on one account never collide.
    client_id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{0,8}$")] = ""

    @field_validator("deadman_s")
    @classmethod
    def _deadman_in_whole_seconds(cls, value: float) -> float:
        # The venues count it in whole seconds (ccxt sends timeout // 1000): under one second
        # the heartbeat would read 0, which switches the dead-man switch off, not on.
        if 0 < value < 1:
            raise ValueError(
                f"{value:g} s would reach the venue as 0 s, which turns the dead-man switch "
                "off; use 0 (off) or at least 1"
            )
        return value

    def credentials(self) -> dict[str, str]:
        """Read the secrets from the environment at the moment they are needed."""
        creds = {}
        for name, env in (
            ("apiKey", self.api_key_env),
            ("secret", self.secret_env),
            ("password", self.password_env),
        ):
            if env and os.environ.get(env):
                creds[name] = os.environ[env]
        return creds


class EngineConfig(Strict):
    mode: Literal["paper", "testnet", "live"] = "paper"
    data_dir: str = "data"
    # Seconds between the periodic summary lines of the headless engine (at least a tenth of
    # a second: a summary carries the whole state and waits for the journal's commit).
    summary_interval_s: Annotated[float, Field(ge=0.1, le=MAX_DURATION_S, allow_inf_nan=False)] = (
        5.0
    )

    @field_validator("data_dir")
    @classmethod
    def _dir_name(cls, value: str) -> str:
        return _path_named(value, "directory")

    # How many recent decisions the in-memory trace keeps (the journal keeps every acting one).
    trace_size: Annotated[int, Field(ge=100, le=1_000_000)] = 2000


class HeartbeatConfig(Strict):
    """The outbound heartbeat (engine.heartbeat): a URL pinged every ``interval_s`` while the
    engine is healthy, so an outside monitor (healthchecks.io and the like) raises the alarm
    when the pings stop. A ping URL usually carries its token: name an environment variable
    holding it with ``url_env``; ``url`` is for a URL that holds no secret (a loopback one)."""

    url: str | None = None
    url_env: EnvName | None = None
    # Seconds between pings; the monitor's period should be this plus a grace time.
    interval_s: Annotated[float, Field(ge=0.2, le=86_400, allow_inf_nan=False)] = 10.0
    # How long a ping may take (at most interval_s: a ping is over before the next is due).
    timeout_s: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 5.0
    method: Literal["GET", "POST", "HEAD"] = "GET"
    # A beat is sent only if the event loop answered within this bound since the last one.
    max_lag_s: Annotated[float, Field(ge=0.05, le=3600, allow_inf_nan=False)] = 5.0
    # "stop": an unhealthy engine just stops pinging (any dead-man monitor alarms when the
    # pings are overdue); "fail": it also sends one ping to URL/fail at once (healthchecks.io's
    # "fail" signal: the alarm goes off without waiting for the grace time).
    on_unhealthy: Literal["stop", "fail"] = "stop"
    # Also stop while the kill switch is engaged (by default a kill is a safe state, not an
    # outage: the alerts page on it, the heartbeat does not).
    stop_on_kill: bool = False

    @model_validator(mode="after")
    def _one_url(self) -> HeartbeatConfig:
        # A whole-section rule, so an error never echoes the URL (it may hold a token).
        if (self.url is None) == (self.url_env is None):
            raise ValueError(
                "give exactly one of url (a URL with no secret in it) or url_env "
                "(the name of an environment variable holding the ping URL)"
            )
        if self.url is not None:
            problem = ping_url_problem(self.url) or _ping_url_secret(self.url)
            if problem:
                raise ValueError(f"url {problem}")
        return self

    def ping_url(self) -> str:
        """The URL to ping, read from the environment at the moment it is needed (never
        printed). Raises ConfigError (one line, without the URL) when it cannot be used."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        value = os.environ.get(self.url_env, "").strip()
        if not value:
            raise ConfigError(
                [
                    f"heartbeat.url_env: the environment variable {self.url_env} is not set; "
                    "export it with the ping URL, or remove the [heartbeat] section"
                ]
            )
        problem = ping_url_problem(value)
        if problem:
            raise ConfigError([f"heartbeat.url_env: the URL in {self.url_env} {problem}"])
        return value


def ping_url_problem(url: str) -> str:
    """Why ``url`` cannot be pinged ("" when it can), in words that never repeat the URL."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http:// or https:// URL with a host"
    try:
        host.encode("idna")  # as the HTTP client will (an empty label, as in a..b, fails)
    except UnicodeError:
        return "has a host name that is not valid (an empty or too long label)"
    if any(c.isspace() for c in url):
        return "must not contain spaces"
    if parts.username is not None or parts.password is not None:
        # Refused in url_env too (a login is sent as Basic auth, which no error may show), so
        # the advice is the monitor's own ping URL, not "put it in url_env".
        return (
            "must not carry a user or password (the heartbeat sends no login: use the "
            "monitor's ping URL, its token in the path, named by url_env)"
        )
    return ""


_UUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")


def _ping_url_secret(url: str) -> str:
    """Why a ping URL written in the file holds a secret ("" when it seems not to): any
    healthchecks.io URL (/<uuid> or /<ping key>/<slug>), a path segment that is a UUID (a
    self-hosted check's id), or a query argument named like a credential. Whoever has such a
    URL can ping the check and keep a dead engine looking alive, so it belongs in url_env.
    Never repeats the URL."""
    from urllib.parse import urlsplit

    from engine.alert_urls import credential_field

    where = "put the URL in an environment variable and name that variable in url_env"
    parts = urlsplit(url)
    segments = parts.path.split("/")
    host = (parts.hostname or "").rstrip(".")
    if host == "hc-ping.com" or host.endswith(".hc-ping.com"):
        # Every healthchecks.io ping URL is a secret: /<uuid> or /<ping key>/<slug>.
        return f"holds a healthchecks.io check's token in its path (as every one does); {where}"
    if any(_UUID.fullmatch(segment) for segment in segments):
        return f"holds a check's UUID in its path (healthchecks.io's token); {where}"
    field = credential_field(url)
    if field:
        return f"holds a credential in {field!r}; {where}"
    return ""


# Alerts (engine.alerts): where they go, what goes where, and how fast.
ALERT_DEFAULT_EVENTS: tuple[AlertKindName, ...] = (
    "approval_waiting",
    "breaker_tripped",
    "kill_engaged",
    "kill_released",
    "venue_problem",
    "journal_blocked",
    "recording_dropped",
    "strategy_failed",
)
ROUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
VENUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
RESERVED_ROUTES = ("default", "command")  # the names [alerts] itself and [alerts.command] go by
UTC_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _alert_url(value: str) -> str:
    """A URL written in the file: one apprise understands, with no login or password in it (a
    URL that holds a token belongs in an environment variable, named in urls_env). The error
    names the scheme only: whatever else the URL holds is never echoed."""
    scheme, sep, rest = value.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme) or not rest:
        raise ValueError("is not an apprise URL like json://127.0.0.1:8080/hook")
    userinfo = rest.split("/", 1)[0].rpartition("@")[0]
    if ":" in userinfo:
        raise ValueError(
            "holds a password; put the whole URL in an environment variable and name that "
            "variable in urls_env"
        )
    from engine.alert_urls import (  # imports apprise
        apprise_understands,
        credential_field,
        holds_secret,
    )

    if not apprise_understands(value):
        raise ValueError(f"apprise has no service for a {scheme}:// URL like this one")
    if holds_secret(value):  # a Telegram bot token, a Discord or Slack webhook token, ...
        raise ValueError(
            f"holds a token (apprise keeps part of a {scheme}:// URL private); put the whole "
            "URL in an environment variable and name that variable in urls_env"
        )
    field = credential_field(value)
    if field:  # a header or argument apprise sends as it is: "+Authorization=Bearer ..."
        raise ValueError(
            f"holds a credential in {field!r}; put the whole URL in an environment variable "
            "and name that variable in urls_env"
        )
    if userinfo:  # json://TOKEN@host: apprise sends it as HTTP Basic auth, a credential
        raise ValueError(
            "holds a login (NAME@host), sent as a credential; put the whole URL in an "
            "environment variable and name that variable in urls_env"
        )
    return value


AlertUrl = Annotated[str, AfterValidator(_alert_url)]


class AlertRouteConfig(Strict):
    """One route: destinations (apprise URLs), the kinds of alert they get, and how many of
    one kind may go in a window before the rest are summed up in one message."""

    urls: list[AlertUrl] = Field(default_factory=list)
    urls_env: list[EnvName] = Field(default_factory=list)
    events: list[AlertKindName] = Field(default_factory=lambda: list(ALERT_DEFAULT_EVENTS))
    max_per_window: Annotated[int, Field(ge=1, le=10_000)] = 10
    window_s: Annotated[float, Field(ge=1, le=86_400, allow_inf_nan=False)] = 60.0

    @property
    def has_destination(self) -> bool:
        return bool(self.urls or self.urls_env)


class AlertCommandConfig(Strict):
    """A program run for each alert with the alert as JSON on stdin, killed after timeout_s."""

    argv: list[str] = Field(min_length=1)
    events: list[AlertKindName] = Field(default_factory=lambda: list(ALERT_DEFAULT_EVENTS))
    timeout_s: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 5.0
    max_per_window: Annotated[int, Field(ge=1, le=10_000)] = 10
    window_s: Annotated[float, Field(ge=1, le=86_400, allow_inf_nan=False)] = 60.0

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        if not value[0].strip() or any("\x00" in a for a in value):
            raise ValueError("argv[0] must name a program, like ['/usr/local/bin/page-me']")
        return value


class AlertsConfig(AlertRouteConfig):
    """``[alerts]``: itself the route named default (its urls, urls_env, events), plus
    ``[alerts.routes.NAME]`` and ``[alerts.command]``, and what all of them share."""

    routes: dict[str, AlertRouteConfig] = Field(default_factory=dict)
    command: AlertCommandConfig | None = None
    # When the daily_summary alert goes out, UTC "HH:MM" (needed once a route asks for it).
    daily_summary_utc: str | None = None
    # One delivery's limit: a kill alert leaves within 5 s of its event, so keep it at most 4.
    timeout_s: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 4.0
    # Alerts waiting per destination and lane; one more is dropped (counted, shown).
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @field_validator("daily_summary_utc")
    @classmethod
    def _utc_time(cls, value: str | None) -> str | None:
        if value is not None and not UTC_TIME.fullmatch(value):
            raise ValueError("must be a UTC time HH:MM, like '21:00'")
        return value

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, AlertRouteConfig]) -> dict[str, AlertRouteConfig]:
        for name, route in value.items():
            if not ROUTE_NAME.fullmatch(name) or name in RESERVED_ROUTES:
                raise ValueError(
                    f"{name!r} cannot name a route; use letters, digits, _ . - (not "
                    f"{' or '.join(RESERVED_ROUTES)})"
                )
            if not route.has_destination:
                raise ValueError(f"routes.{name} has no destination; give it urls or urls_env")
        return value

    @model_validator(mode="after")
    def _somewhere_to_go(self) -> AlertsConfig:
        if not (self.has_destination or self.routes or self.command):
            raise ValueError(
                "[alerts] has no destination; add urls or urls_env, an [alerts.routes.NAME] "
                "section, or an [alerts.command]"
            )
        wanted = [*self.events, *(e for r in self.routes.values() for e in r.events)]
        if self.command is not None:
            wanted += self.command.events
        if "daily_summary" in wanted and self.daily_summary_utc is None:
            raise ValueError(
                "a route asks for daily_summary: set alerts.daily_summary_utc to when it goes "
                "out, a UTC time like '21:00'"
            )
        return self


def _paper_broker_only() -> dict[Literal["paper"], PaperBrokerConfig]:
    return {"paper": PaperBrokerConfig()}


class Config(Strict):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    market: MarketConfig = Field(default_factory=MarketConfig)
    broker: dict[Literal["paper"], PaperBrokerConfig] = Field(default_factory=_paper_broker_only)
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig)
    risk: RiskLimits = Field(default_factory=RiskLimits)
    strategies: list[StrategyConfig] = Field(default_factory=list)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    # The risk profile this config was built with (set by --profile; shown with the mode).
    profile: str = "default"
    venues: dict[str, VenueConfig] = Field(default_factory=dict)
    heartbeat: HeartbeatConfig | None = None
    # Alerts to a phone, a chat or a program (engine.alerts); None: no alerts at all.
    alerts: AlertsConfig | None = None
    record: RecordConfig = Field(default_factory=RecordConfig)

    @property
    def paper(self) -> PaperBrokerConfig:
        return self.broker.get("paper", PaperBrokerConfig())

    @field_validator("venues")
    @classmethod
    def _venue_names(cls, value: dict[str, VenueConfig]) -> dict[str, VenueConfig]:
        # A venue's name is its recording folder (DATA/record/NAME) and what `cockpit resolve
        # NAME` types: [venues."bin ance"] passed, and its recorder failed on the first payload.
        for name in value:
            if not VENUE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} cannot name a venue; use 1-32 letters, digits, _ . - starting "
                    "with a letter or digit, like binance (it names the venue's recording "
                    "folder and is typed in cockpit resolve)"
                )
        folded = [name.casefold() for name in value]
        same = sorted(name for name in value if folded.count(name.casefold()) > 1)
        if same:
            # Where the file system ignores case, DATA/record/Binance is DATA/record/binance:
            # two venues' recordings in one folder, one hash chain broken by the other.
            raise ValueError(
                f"venue names must differ in more than case: {' and '.join(same)}; rename one"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _venue_modes_read_venues(cls, data: Any) -> Any:
        """Testnet and live trade on the venues' own market data: their source is "venue"
        (set when the file does not say; a file that names another source is refused)."""
        if not isinstance(data, dict):
            return data
        engine = data.get("engine")
        mode = engine.get("mode") if isinstance(engine, dict) else None
        if mode not in ("testnet", "live"):
            return data
        market = data.get("market")
        if market is None:
            market = {}
        if not isinstance(market, dict):
            return data
        source = market.get("source")
        if source is None:
            return {**data, "market": {**market, "source": "venue"}}
        if source != "venue":
            raise ValueError(
                f"market.source: {mode} mode trades on the venues' own market data; remove "
                f'market.source or set it to "venue" (paper mode can use {source!r})'
            )
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        for i, strat in enumerate(self.strategies):
            # In any case: "Global" beside the engine-wide "global" in the breakers list, and
            # `cockpit rearm global` typed for the strategy re-armed the engine's breakers.
            own = strat.id.casefold()
            if own in RESERVED_STRATEGY_IDS:
                raise ValueError(
                    f"strategies[{i}].id: {strat.id!r} is the engine's own name for "
                    f"{RESERVED_STRATEGY_IDS[own]} (in any case); give the strategy another id"
                )
        ids = [s.id for s in self.strategies]
        folded = [i.casefold() for i in ids]
        dupes = sorted({i for i, f in zip(ids, folded, strict=True) if folded.count(f) > 1})
        if dupes:
            # "ema" and "EMA" read as one strategy in every pane, log and alert.
            raise ValueError(
                f"strategy ids must be unique, also ignoring case; repeated: {', '.join(dupes)}"
            )
        base = self.safety.breakers.model_dump()
        for i, strat in enumerate(self.strategies):
            for key in sorted(GLOBAL_ONLY_BREAKERS & set(strat.breakers)):
                # Read from [safety.breakers] only: per strategy it was accepted and ignored.
                raise ValueError(
                    f"strategies[{i}].breakers.{key}: this breaker watches the whole engine, "
                    "not one strategy, so a strategy cannot set it; set it in [safety.breakers]"
                )
            try:
                BreakersConfig.model_validate(_overlay(base, strat.breakers))
            except ValidationError as exc:
                # Worded as every other field's (an unknown key was "Extra inputs are not
                # permitted", pydantic's words, where the rest say how to fix it).
                err = exc.errors()[0]
                where = ("strategies", i, "breakers", *err["loc"])
                raise ValueError(describe_error({**err, "loc": where})) from None
        if self.engine.mode != "paper":
            for i, strat in enumerate(self.strategies):
                if strat.allow_short:
                    # Every venue the engine trades is spot: each short entry would be denied
                    # at run time (SPOT_SELL_EXCEEDS_HOLDING), a strategy that never trades.
                    raise ValueError(
                        f"strategies[{i}].allow_short: {self.engine.mode} trades spot on every "
                        "venue, where a sell from flat would sell coins the engine never bought; "
                        "set allow_short = false"
                    )
        known = set(self.symbols())
        ccy = self.portfolio.quote_currency
        for i, strat in enumerate(self.strategies):
            for sym in strat.symbols:
                if sym not in known:
                    raise ValueError(
                        f"strategies[{i}].symbols: {sym!r} is not a market symbol "
                        f"(known: {', '.join(sorted(known))})"
                    )
                quote = symbol_quote(sym)
                if quote is not None and quote != ccy:
                    # The book is one currency: ETH/BTC's prices were taken as USDT, so its
                    # sizing, notional and exposure limits held in BTC (a 2% entry bought
                    # 40,000 ETH on a 100,000 USDT account).
                    raise ValueError(
                        f"strategies[{i}].symbols: {sym!r} is priced in {quote}, but the "
                        f"portfolio counts in {ccy} (portfolio.quote_currency), the unit of "
                        "every limit, size and PnL; trade symbols quoted in "
                        f"{ccy}, or set quote_currency = {quote!r} if they all are"
                    )
        if self.market.source == "venue" and not known:
            # The venues are asked for the strategies' symbols only: with none, there is no
            # market to read, and the engine could not start.
            raise ValueError(
                "strategies: the venues' market data is read for the strategies' symbols and no "
                "strategy names one; add a [[strategies]] section with symbols = [...]"
            )
        if self.market.source == "venue" and self.venues:
            unmapped = []  # every symbol's problem, one line each (parse_config splits them)
            for sym in sorted({s for strat in self.strategies for s in strat.symbols}):
                serving = self.venues_for(sym)
                if len(serving) > 1:
                    unmapped.append(
                        f"symbol {sym} would trade on venues {' and '.join(serving)}: list each "
                        "venue's symbols (venues.NAME.symbols = [...]) so every symbol has one"
                    )
                elif not serving:
                    unmapped.append(
                        f"symbol {sym} is on no venue: add it to a venue's symbols "
                        "(venues.NAME.symbols = [...])"
                    )
            if unmapped:
                raise ValueError("\n".join(unmapped))
        return self

    @model_validator(mode="after")
    def _record_has_a_feed(self) -> Config:
        # Only the venues' feeds are recorded: on the simulated market `enabled = true`
        # passed the check and the engine recorded nothing, for days. (A replay of a
        # recording is not recorded again, as docs/marketdata.md says: the config that
        # recorded it may replay it as it is.)
        if (
            self.record.enabled
            and self.market.source == "simulated"
            and self.engine.mode not in ("testnet", "live")
        ):
            raise ValueError(
                "record.enabled: only the venues' feeds are recorded, and this engine reads "
                'the simulated market; set [market] source = "venue" to record a venue\'s, '
                "or record.enabled = false"
            )
        return self

    @model_validator(mode="after")
    def _venues_usable(self) -> Config:
        if self.venues or self.market.source == "venue":
            from engine.venues.factory import venue_config_problems  # imports ccxt

            problems = venue_config_problems(self)
            if problems:
                raise ValueError(problems[0])
        return self

    def venues_for(self, symbol: str) -> list[str]:
        """The configured venues that would trade ``symbol``."""
        return [
            name
            for name, v in sorted(self.venues.items())
            if v.symbols is None or symbol in v.symbols
        ]

    def breakers_for(self, strategy_id: str) -> BreakersConfig:
        """The global breaker settings with the strategy's own overrides applied."""
        for strat in self.strategies:
            if strat.id == strategy_id and strat.breakers:
                return BreakersConfig.model_validate(
                    _overlay(self.safety.breakers.model_dump(), strat.breakers)
                )
        return self.safety.breakers

    def symbols(self) -> list[str]:
        if (
            self.market.source == "replay"
            and self.market.replay is not None
            and self.market.replay.kind == "recording"
        ):
            # A recording names its own symbols: the strategies' are the ones replayed.
            return sorted({s for strat in self.strategies for s in strat.symbols})
        if self.market.source == "replay" and self.market.replay is not None:
            return [self.market.replay.symbol]
        if self.market.source == "venue":
            return sorted({s for strat in self.strategies for s in strat.symbols})
        return list(self.market.simulated.symbols)


def symbol_quote(symbol: str) -> str | None:
    """The currency a market symbol is priced in (``ETH/BTC``: BTC; ``BTC/USDT:USDT``: USDT),
    or None for a name without one that could be a currency code (a simulated ``FOO``)."""
    _base, sep, rest = symbol.partition("/")
    quote = rest.split(":", 1)[0]
    return quote if sep and re.fullmatch(r"[A-Za-z0-9]{1,16}", quote) else None


def _overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it, table by table: a strategy's
    ``rolling_loss = { max_loss_pct = 1 }`` keeps the ``window_s`` of [safety.breakers] (a flat
    merge put the default 3600 s back in its place)."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            out[key] = _overlay(below, value)
        elif isinstance(value, dict) and below is not None:
            # A table the base got wrong (a config's `[safety] breakers = 5` under a profile's
            # [safety.breakers]) stays as written, so it is refused by name, as it is without
            # the profile, instead of being silently replaced.
            continue
        else:
            out[key] = value
    return out


class ConfigError(Exception):
    """A config problem, already phrased for the user: one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_SECRET_KEYS = {"api_key", "apikey", "secret", "password", "private_key", "token"}


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "union") or str(part).startswith(("function-", "literal[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_NAME_TYPO = re.compile(r"[A-Za-z0-9_]{1,32}")  # a mistyped variable name (1BAD), shown as given


def _odd_letter(loc: tuple[Any, ...]) -> str:
    """What makes an unknown key's name look right and be wrong: "engine.mоde: unknown key"
    (a Cyrillic о) or "engine.mode : unknown key" read as a mistake the user could not see."""
    import unicodedata

    leaf = str(loc[-1]) if loc else ""
    for c in leaf:
        if not (c.isascii() and (c.isalnum() or c in "_-")):
            name = unicodedata.name(c, "a control character" if not c.isprintable() else "")
            what = "a space" if c == " " else f"{name or 'the character'} (U+{ord(c):04X})"
            return f" (the name holds {what}, which no key has)"
    return ""


def describe_error(err: ErrorDetails) -> str:
    """One line for one pydantic error: the dotted path, what was given, what is wrong."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))
    path = _field_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        leaf = str(loc[-1]).lower() if loc else ""
        if leaf in _SECRET_KEYS:
            # Alerts and the heartbeat take a whole URL (token inside) from the environment.
            where = {"alerts": "urls_env", "heartbeat": "url_env"}.get(str(loc[0]), f"{leaf}_env")
            what = "the whole URL" if where != f"{leaf}_env" else "it"
            return (
                f"{path}: secrets are not allowed in config files; put {what} in an environment "
                f"variable and name that variable with {where}"
            )
        return f"{path}: unknown key; remove it or check its spelling{_odd_letter(loc)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return f"{path}: required field is missing"
    if "urls" in loc:  # an alert URL may hold a token by mistake: never echoed
        return f"{path}: {msg}"
    given = str(err.get("input"))
    if any(isinstance(p, str) and p.endswith("_env") for p in loc) and (
        not _NAME_TYPO.fullmatch(given) or may_be_a_key(given)
    ):
        # Where a variable's name goes, a value that is no near-miss of a name (a URL, a long
        # key, a phrase) is most likely the secret itself: it is not echoed.
        if looks_like_a_key(given):
            return (
                f"{path}: looks like a key, not the name of an environment variable (the value "
                "is not shown); export the key in a variable and write its name, like "
                "BINANCE_API_KEY"
            )
        return (
            f"{path}: not an environment variable name (letters, digits and _, not starting "
            "with a digit); write the name of the variable that holds the secret, never the "
            "secret itself (the value is not shown)"
        )
    if isinstance(err.get("input"), dict):  # a whole-section rule: the message says it all
        msg = msg[0].lower() + msg[1:]
        return msg if not loc else f"{path}: {msg}"
    return f"{path}: got {_short(err.get('input'))}; {msg[0].lower() + msg[1:]}"


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; raise ConfigError with one line per problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            for line in describe_error(err).split("\n"):  # a rule may name several problems
                if line not in problems:
                    problems.append(line)
        raise ConfigError(problems) from None


PROFILES_DIR = DEFAULT_CONFIG_PATH.parent / "profiles"
_PROFILE_KEYS = {"risk", "safety", "sizing"}


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _read_toml(cfg_path: Path) -> dict[str, Any]:
    try:
        return read_toml(cfg_path)
    except TomlFileError as exc:
        raise ConfigError([str(exc)]) from None


def apply_profile(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Overlay a risk profile (config/profiles/NAME.toml): limits and sizing set together."""
    known = ", ".join(profile_names()) or "none"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
        # A path (../../etc/x, profiles/aggressive.toml) is not read: only the names below are.
        raise ConfigError([f"--profile: {name!r} is not a profile name; known: {known}"])
    path = PROFILES_DIR / f"{name}.toml"
    if not path.exists():
        raise ConfigError([f"--profile: no profile named {name!r}; known: {known}"])
    profile = _read_toml(path)
    unknown = sorted(set(profile) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            [
                f"{path}: {k}: unknown profile section; allowed: risk, safety, sizing"
                for k in unknown
            ]
        )
    _check_profile(path, profile)
    sizing = profile.pop("sizing", None)
    merged = dict(data)
    for key, value in profile.items():
        below = merged.get(key, {})
        # A section the config got wrong (``risk = 5``) stays as written, so it is refused by
        # name instead of being silently replaced by the profile's table.
        merged[key] = _overlay(below, value) if isinstance(below, dict) else below
    strategies = merged.get("strategies")
    if sizing is not None and isinstance(strategies, list):  # else refused as not a list
        merged["strategies"] = strategies = [
            {**s, "sizing": sizing}
            if isinstance(s, dict) and isinstance(s.get("sizing", {}), dict)
            else s  # not a table, or a sizing that is not one: refused by name below
            for s in strategies
        ]
    safety = profile.get("safety")
    breakers = safety.get("breakers") if isinstance(safety, dict) else None
    if isinstance(breakers, dict) and isinstance(strategies, list):
        # The profile's breakers hold for every strategy, as its sizing does: a strategy's own
        # override of a breaker the profile sets (consecutive_losses = 20) would keep it
        # looser than the profile that is shown as running.
        merged["strategies"] = [
            {**s, "breakers": {k: v for k, v in s["breakers"].items() if k not in breakers}}
            if isinstance(s, dict) and isinstance(s.get("breakers"), dict)
            else s
            for s in strategies
        ]
    merged["profile"] = name
    return merged


def _check_profile(path: Path, profile: dict[str, Any]) -> None:
    """Refuse a broken profile in its own name: laid over the config, its mistakes read as the
    config's (``strategies[0].sizing.bogus``), a field the user then cannot find in the file."""
    problems: list[str] = []
    sections = {k: profile[k] for k in ("risk", "safety") if k in profile}
    try:
        Config.model_validate(sections)
    except ValidationError as exc:
        problems += [describe_error(err) for err in exc.errors()]
    if "sizing" in profile:
        try:
            SizingConfig.model_validate(profile["sizing"])
        except ValidationError as exc:
            problems += [
                describe_error({**err, "loc": ("sizing", *err["loc"])}) for err in exc.errors()
            ]
    if problems:
        raise ConfigError([f"{path}: {line}" for p in problems for line in p.split("\n")])


def data_dir_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be an engine's data directory, or None. A missing one is created
    (with its parents), so what is checked is the path itself and the nearest part of it that
    exists: ``/dev/null/x`` cannot be created any more than a file can be entered."""
    p = Path(path)
    shown = repr(str(path)) if len(str(path)) <= 120 else repr(str(path)[:117] + "...")
    try:
        if p.is_symlink() and not p.exists():  # mkdir would only say "File exists"
            return (
                f"{shown} is a link to nothing (a dangling link or a loop of links); name a "
                "directory"
            )
        if p.exists() and not p.is_dir():
            return (
                f"{shown} exists and is not a directory; name a directory (it is "
                "created if missing)"
            )
        for parent in p.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    return (
                        f"{shown} cannot be created: {str(parent)!r} is not a directory; "
                        "name a directory"
                    )
                break
    except OSError as exc:  # a name too long for the file system, a loop of links
        return f"{shown} cannot be used as a directory ({exc.strerror or exc})"
    return None


def check_runnable(cfg: Config) -> None:
    """The checks that need more than the file's values: every strategy can be built (its class
    and parameters) and the replay file exists. `cockpit config check` and every command that
    starts an engine run them after :func:`parse_config`, so both refuse the same configs (the
    backtest replays data it was handed, so its replay path is only a label)."""
    from engine.strategies.registry import build_strategies

    build_strategies(cfg.strategies)
    problem = data_dir_problem(cfg.engine.data_dir)
    if problem is not None:
        raise ConfigError([f"engine.data_dir: {problem}"])
    if cfg.heartbeat is not None:
        cfg.heartbeat.ping_url()  # the URL variable is set and holds a URL
    if cfg.alerts is not None:
        from engine.alert_urls import destination_problems  # imports apprise

        problems = destination_problems(cfg.alerts)
        if problems:
            raise ConfigError(problems)
    replay = cfg.market.replay
    if cfg.market.source == "replay" and replay is not None:
        try:
            Path(replay.path).stat()
        except FileNotFoundError:
            pass  # said below, in the words of each kind
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                [f"market.replay.path: cannot use {_short(replay.path)}: {why}; give a file path"]
            ) from None
    if cfg.market.source == "replay" and replay is not None and replay.kind == "recording":
        from engine.marketdata.recording import RecordingReplay, is_recording
        from engine.marketdata.replay import ReplayError

        if not is_recording(Path(replay.path)):
            raise ConfigError(
                [
                    f"market.replay.path: no recording at {replay.path!r}; give a day file "
                    "(*.rec.jsonl) or a folder under DATA/record holding some"
                ]
            )
        try:
            RecordingReplay(replay.path, cfg.symbols())
        except ReplayError as exc:
            raise ConfigError([f"market.replay.path: {exc}"]) from None
    elif cfg.market.source == "replay" and replay is not None:
        from engine.marketdata.replay import ReplayError, check_replay_header, folder_files

        path = Path(replay.path)
        if path.is_dir() and replay.kind != "bars":
            raise ConfigError(
                [
                    f'market.replay.path: {replay.path!r} is a folder; kind = "quotes" reads '
                    'one bookTicker CSV file (a folder of files is read for kind = "bars")'
                ]
            )
        if not (path.is_file() or path.is_dir()):
            raise ConfigError(
                [
                    f"market.replay.path: no such file {replay.path!r}; give a recorded CSV "
                    "file (or, for bars, a folder of them)"
                ]
            )
        try:  # a folder of bars: `cockpit data download`'s month files, each one checked
            for f in folder_files(path) if path.is_dir() else [path]:
                check_replay_header(f, replay.kind)
        except ReplayError as exc:
            raise ConfigError([f"market.replay.path: {exc}"]) from None


def load_config(path: str | Path | None = None, profile: str | None = None) -> Config:
    """Load and validate a TOML config (default: the embedded paper-trading one), with an
    optional risk profile laid over it."""
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    data = _read_toml(cfg_path)
    if "profile" in data:
        # Only --profile lays a profile's limits over the file: a name written in the file
        # would be shown with the mode while the file's own limits run.
        known = ", ".join(profile_names()) or "none"
        raise ConfigError(
            [
                f"{cfg_path}: profile: a config file cannot name a risk profile (its limits "
                f"would not be applied); remove the line and start with --profile NAME "
                f"(known: {known})"
            ]
        )
    if profile is not None:
        data = apply_profile(data, profile)
    return parse_config(data)
