"""What a researcher chooses (``BacktestOptions``) and the config one run uses.

Safety: the config's breakers and limits act as in the live engine. ``breakers=False`` swaps in
a board whose breakers never trip; ``limits=False`` (see ``NO_LIMITS``) lifts the pre-trade
limits (order notional, position and gross-exposure fractions to their maxima, order throttles)
and the kill switch's daily-loss and drawdown limits to 100%. Grid rounding, the cash check and
the quote checks always apply. Every strategy runs in approval mode ``auto`` (nobody approves in
a backtest) and the ``unreviewed_fills`` breaker is off (nobody reviews fills); ``clock_drift``
cannot act (no wall clock). ``safety_settings`` lists every breaker, limit, loss limit and the
approvals policy as the run had them, and the report prints it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from engine.backtest.data import BARS, DEFAULT_SYMBOL, MarketData
from engine.backtest.errors import BacktestError
from engine.config import STRATEGY_ID, Config, ConfigError, parse_config, symbol_quote
from engine.metrics import iso
from engine.strategies.registry import StrategyLoadError, build_strategies, load_strategy_class

FILL_MODES = ("live", "close", "next-open")
SLIPPAGE_MODES = ("model", "none")
# The paper broker's shortest latency (it adds at least 1 ns): close/next-open fills are immediate.
MIN_LATENCY_MS = 1e-6
_ID_OK = re.compile(STRATEGY_ID)

# --no-limits: every pre-trade limit at the most permissive value the config allows.
NO_LIMITS: dict[str, Any] = {
    "max_order_notional": 1e15,
    "max_position_fraction": 1.0,
    "max_open_positions": 1_000_000,
    "max_gross_exposure_fraction": 10.0,
    "price_collar_pct": 50.0,
    "strategy_throttle": {"max_orders": 1_000_000_000, "per_seconds": 1.0},
    "global_throttle": {"max_orders": 1_000_000_000, "per_seconds": 1.0},
}
NO_LOSS_LIMITS: dict[str, Any] = {"daily_loss_limit_pct": 100.0, "drawdown_limit_pct": 100.0}
# The unreviewed-fills breaker's limit in every backtest: it never trips (nobody reviews).
UNREVIEWED_FILLS_OFF = 10**9


# ------------------------------------------------------------------ options and config


@dataclass(frozen=True)
class BacktestOptions:
    """What a researcher chooses; ``None`` means "as the config says"."""

    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    symbol: str | None = None
    timeframe_s: int | None = None
    cash: float | None = None
    fee_bps: float | None = None
    fill: str = "live"
    slippage: str = "model"
    spread_bps: float = 0.0
    qty: float | None = None
    fraction: float | None = None
    warmup: int = 0
    allow_short: bool | None = None
    breakers: bool = True
    limits: bool = True
    start_ns: int | None = None
    end_ns: int | None = None
    # Protective exits (engine/exits.py) over the strategy's config ``exits``; None: as it is.
    stop_loss_pct: float | None = None
    take_profit_pct: float | None = None
    trailing_atr: float | None = None
    atr_period: int | None = None
    time_stop_bars: int | None = None

    def __post_init__(self) -> None:
        if self.fill not in FILL_MODES:
            raise BacktestError(f"fill must be one of {', '.join(FILL_MODES)}, got {self.fill!r}")
        if self.slippage not in SLIPPAGE_MODES:
            raise BacktestError(
                f"slippage must be one of {', '.join(SLIPPAGE_MODES)}, got {self.slippage!r}"
            )
        if self.qty is not None and self.fraction is not None:
            raise BacktestError("--qty and --fraction are mutually exclusive; pick one")
        if self.warmup < 0:
            raise BacktestError(f"--warmup must be >= 0, got {self.warmup}")
        if self.start_ns is not None and self.end_ns is not None and self.start_ns >= self.end_ns:
            raise BacktestError(
                f"--start {iso(self.start_ns)} is not before --end {iso(self.end_ns)}"
            )

    def exits_overrides(self) -> dict[str, Any]:
        """The exit options as the config's ``exits`` keys (None: not given)."""
        return {
            "stop_loss_pct": self.stop_loss_pct,
            "take_profit_pct": self.take_profit_pct,
            "trailing_atr": self.trailing_atr,
            "atr_period": self.atr_period,
            "time_stop_bars": self.time_stop_bars,
        }

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["start"] = iso(self.start_ns) if self.start_ns is not None else None
        out["end"] = iso(self.end_ns) if self.end_ns is not None else None
        return out


def _select_strategy(base: Config, name: str | None) -> tuple[dict[str, Any], bool]:
    """The one strategy to backtest: a configured id, else a built-in kind or module:Class.
    Returns its config (as a dict) and whether it came from the config."""
    configured = {s.id: s for s in base.strategies}
    if name is None:
        enabled = [s for s in base.strategies if s.enabled]
        if len(enabled) == 1:
            return enabled[0].model_dump(), True
        if not enabled:
            raise BacktestError(
                "the config has no enabled strategy; pass --strategy KIND "
                "(built-in: ema_cross, rsi_reversion, donchian_breakout)"
            )
        ids = ", ".join(s.id for s in enabled)
        raise BacktestError(
            f"the config has {len(enabled)} strategies ({ids}); pick one with --strategy ID "
            "or a built-in kind"
        )
    if name in configured:
        return configured[name].model_dump(), True
    try:
        cls = load_strategy_class(name)
    except StrategyLoadError as exc:
        known = ", ".join(configured) or "none"
        raise BacktestError(f"--strategy: {exc.message}; configured ids: {known}") from None
    sid = cls.kind or cls.__name__
    if not _ID_OK.match(sid):
        sid = re.sub(r"[^A-Za-z0-9_.-]", "_", sid).lstrip("-")[:40] or "strategy"
    return {"id": sid, "kind": name, "symbols": [DEFAULT_SYMBOL], "params": {}}, False


def _param_problems(kind: str, params: dict[str, Any], given: dict[str, Any]) -> list[str]:
    cls = load_strategy_class(kind)
    try:
        cls.Params.model_validate(params)
    except ValidationError as exc:
        fields = ", ".join(sorted(cls.Params.model_fields)) or "no parameters"
        out = []
        for err in exc.errors():
            loc = err.get("loc") or ()
            name = str(loc[0]) if loc else ""
            where = f"--param {name}" if name in given or not name else f"params.{name}"
            if err["type"] == "extra_forbidden":
                line = f"{where}: {kind} has no parameter {name!r}; it takes: {fields}"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
                msg = msg[:1].lower() + msg[1:]
                shown = f"={params[name]!r}" if name in params else ""
                line = f"{where}{shown}: {msg}"
            if line not in out:
                out.append(line)
        return out
    return []


def build_backtest_config(base: Config, data: MarketData, opts: BacktestOptions) -> Config:
    """The config for one run: ``base`` with the chosen strategy trading the data's symbol on
    the data's timeframe, in approval mode auto, plus the options' overrides."""
    if opts.symbol is not None and data.symbol is not None and opts.symbol != data.symbol:
        # The strategy would trade one symbol's instrument on another's prices, reported
        # under the name given: --symbol names data that does not name its own.
        raise BacktestError(
            f"--symbol {opts.symbol}: the data's rows name {data.symbol}; leave --symbol out, "
            f"or give {opts.symbol}'s data"
        )
    symbol = opts.symbol or data.symbol or DEFAULT_SYMBOL
    strat, configured = _select_strategy(base, opts.strategy)
    kind = strat["kind"]
    params = {**strat.get("params", {}), **opts.params}
    problems = _param_problems(kind, params, opts.params)
    if problems:
        raise BacktestError(problems)
    if data.kind == BARS:
        tf = opts.timeframe_s or data.timeframe_s
        if tf is None:
            tf = data.infer_timeframe()
    else:
        tf = opts.timeframe_s or (strat["timeframe_s"] if configured else 1)
    strat = dict(strat)
    strat.update(
        symbols=[symbol],
        timeframe_s=tf,
        params=params,
        enabled=True,
        approval="auto",
    )
    if opts.qty is not None:
        strat["sizing"] = {"model": "fixed_qty", "qty": opts.qty}
    elif opts.fraction is not None:
        strat["sizing"] = {"model": "fixed_fraction", "fraction": opts.fraction}
    if opts.allow_short is not None:
        strat["allow_short"] = opts.allow_short
    exits = {k: v for k, v in opts.exits_overrides().items() if v is not None}
    if exits:
        strat["exits"] = {**(strat.get("exits") or {}), **exits}

    doc = base.model_dump()
    doc["strategies"] = [strat]
    quote = symbol_quote(symbol)
    if quote is not None:
        # One symbol, one currency: the run counts in what it is priced in (BTC/USD in USD,
        # ETH/BTC in BTC), as the config check asks of every engine.
        doc["portfolio"]["quote_currency"] = quote
    grid = symbol_grid(base, symbol)
    doc["market"]["source"] = "replay"
    doc["market"]["replay"] = {
        "path": data.path,
        "kind": data.kind,
        "symbol": symbol,
        "speed": "max",
        **grid,
    }
    apply_run_options(doc, opts)
    try:
        cfg = parse_config(doc)
        build_strategies(cfg.strategies)
    except ConfigError as exc:
        raise BacktestError([f"config error: {p}" for p in exc.problems]) from None
    return cfg


def apply_run_options(doc: dict[str, Any], opts: BacktestOptions) -> None:
    """The options every backtest config gets (one strategy or a whole portfolio): paper
    mode, fees, the slippage and fill models' broker settings, cash, no unreviewed-fills
    breaker, and the limits lifted by ``--no-limits``."""
    doc["engine"]["mode"] = "paper"
    # A backtest reads recorded data and records nothing (a trading config's [record]).
    doc.setdefault("record", {})["enabled"] = False
    paper = doc["broker"].setdefault("paper", {})
    if opts.fee_bps is not None:
        paper["taker_fee_bps"] = opts.fee_bps
        paper["maker_fee_bps"] = opts.fee_bps
    if opts.slippage == "none":
        paper["impact_bps_per_size"] = 0.0
    if opts.fill != "live":
        paper["latency_median_ms"] = MIN_LATENCY_MS
        paper["latency_sigma"] = 0.0
    if opts.cash is not None:
        doc["portfolio"]["starting_cash"] = opts.cash
    # Nobody reviews fills in a backtest: the unreviewed-fills breaker exists to make a person
    # look at live automation, and here it would only pause every run after a few dozen fills.
    # The report lists it as off (``safety_settings``).
    doc["safety"]["breakers"]["max_unreviewed_fills"] = UNREVIEWED_FILLS_OFF
    if not opts.limits:
        doc["risk"].update(NO_LIMITS)
        doc["safety"]["kill_switch"].update(NO_LOSS_LIMITS)


def symbol_grid(base: Config, symbol: str) -> dict[str, float]:
    """Tick, lot and minimum notional for the symbol: the config's replay or simulated spec."""
    rc = base.market.replay
    if rc is not None and rc.symbol == symbol:
        return {
            "tick_size": rc.tick_size,
            "lot_size": rc.lot_size,
            "min_notional": rc.min_notional,
        }
    spec = base.market.simulated.symbols.get(symbol)
    if spec is not None:
        return {
            "tick_size": spec.tick_size,
            "lot_size": spec.lot_size,
            "min_notional": spec.min_notional,
        }
    return {}
