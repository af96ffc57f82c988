"""Backtests: the live engine's core over recorded bars or quotes, on a simulated clock.

A backtest here is not a second implementation of the strategy pipeline. It builds the very
objects the live engine builds (``EngineCore`` with the configured strategies, pre-trade checks,
safety controller, breakers and approval gate; a ``PaperBroker``; a ``Portfolio``) and drives them
exactly as ``engine.runtime.Engine.process`` does, minus the journal: the core is sans-I/O, so a
``SubmitOrder`` goes straight to ``broker.submit`` and a ``CancelOrder`` to ``broker.cancel``, and
the events are collected for the report. Time is the data's own event time. Bar data goes
through ``EngineCore.on_bars`` while no order is open: the same per-bar checks, answered once per
run of quiet bars, with no Bar, Quote or event built for a bar nobody acts on (see its docstring;
``tests/test_backtest_fastpath.py`` pins it to ``on_bar`` bit for bit).

Data (``load_market_data``; the format is told from the content and the extension):

* OHLCV CSV with the header ``timestamp,open,high,low,close,volume`` (timestamp = the bar's open,
  ISO-8601 (naive = UTC) or epoch milliseconds; an optional ``symbol`` column names the symbol);
* the ccxt ``fetch_ohlcv`` JSON shape ``[[ms, open, high, low, close, volume], ...]`` (or an
  object ``{"symbol": ..., "ohlcv": [...]}``);
* a Binance bookTicker CSV ``local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty``.

Unreadable files raise ``ReplayError`` (one line naming the file and row); values that parse but
are bad go to the core's boundary validator, which rejects and counts them, as in the live engine
(bars: not finite, not positive, open/close outside [low, high], above ``MAX_BAR_PRICE``, a
duplicate or backwards timestamp, a ``PRICE_JUMP_FACTOR`` jump; see engine/marketdata/
validate.py). A rejected row changes nothing but the count: the run equals the run without the
row. The result's header says how many rows were read, accepted and rejected by code; a run in
which every row was rejected raises ``NoUsableDataError``. Every format is streamed and a file
longer than ``max_rows`` (default ``MAX_ROWS``, 5,000,000) is refused at that row, so memory is
bounded by the limit. The bar timeframe is inferred from the most common gap between bar
timestamps.

Bar volume is kept in the quote currency (the core's displayed size is volume / close, in the
base currency). ccxt OHLCV volume is in the base currency, so JSON volume is multiplied by the
close on load; a CSV is taken as quote volume unless ``volume_unit="base"`` says otherwise
(``DEFAULT_VOLUME_UNIT``). The header's ``volume`` says which unit was used and how many
fills came from orders larger than the displayed size (what the fill model then does: impact
levels, then "exceeds simulated depth").

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
  first quote past its end; its close is the mid of the quote before).
* ``next-open``: the next bar's open. Orders submitted on bar ``i`` execute against a quote at
  bar ``i+1``'s open, stamped at ``max(bar i+1 open time, arrival)``, before bar ``i+1`` is
  processed. On quote data the next bar opens with the very quote that closed the signal bar,
  so the order executes against that quote.

Slippage (``BacktestOptions.slippage``): ``model`` uses the paper broker's model on the execution
quote (far side of the spread, ``impact_bps_per_size`` per displayed size walked); bar data has no
spread, so the synthetic bar quote is zero-spread unless ``spread_bps`` widens it, and its
displayed size is the bar's volume / close (as the core's). ``none`` executes against a
zero-spread quote at the reference price (mid / bar price) with an unlimited displayed size and
the config's impact set to 0: fills at exactly the reference price.

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

import csv
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from engine.breakers import BreakerBoard, BreakerChange
from engine.config import Config, ConfigError, parse_config
from engine.core import CancelOrder, EngineCore, SubmitOrder, _BarBuilder
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
from engine.marketdata.replay import (
    BAR_COLUMNS,
    MAX_ROWS,
    QUOTE_COLUMNS,
    UNPACK_ERRORS,
    ReplayError,
    _read_columns,
    count_beyond,
    open_data,
    parse_timestamp_ns,
    too_many_rows,
)
from engine.marketdata.validate import QuoteValidator
from engine.paper_broker import DEPTH_EXHAUSTED, PaperBroker
from engine.portfolio import Portfolio
from engine.report import Metrics, RoundTrip, compute_metrics, iso
from engine.strategies.registry import StrategyLoadError, build_strategies, load_strategy_class
from engine.types import (
    NS_PER_MS,
    NS_PER_SECOND,
    Bar,
    BarSeries,
    Fill,
    Instrument,
    Liquidity,
    OrderStatus,
    OrderUpdate,
    Quote,
    Side,
)

BARS = "bars"
QUOTES = "quotes"
FILL_MODES = ("live", "close", "next-open")
SLIPPAGE_MODES = ("model", "none")
DEFAULT_SYMBOL = "BTC/USDT"
# Bar volume: in the base currency (BTC of BTC/USDT) or the quote currency (USDT). ccxt's
# fetch_ohlcv is base by definition; a CSV is taken as quote unless told (the shipped 1-minute
# bars, and what the core has always read: displayed size = volume / close).
VOLUME_UNITS = ("base", "quote")
DEFAULT_VOLUME_UNIT = {"csv bars": "quote", "ccxt json": "base", "arrays": "quote"}
VENUE = "replay"  # as the live engine's replay sources
SESSION = 1  # a fresh live engine's first session: same intent and fill ids
# Displayed size of a "no slippage" execution quote: no order walks past the touch.
UNLIMITED_SIZE = 1e30
# The paper broker's shortest latency (it adds at least 1 ns): close/next-open fills are immediate.
MIN_LATENCY_MS = 1e-6
CHUNK = 65_536  # events between progress reports / cancel checks
_ID_OK = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")

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


class BacktestError(ValueError):
    """A backtest that cannot run as asked; one line per problem, phrased for the user."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class NoUsableDataError(BacktestError):
    """Every row of the data was rejected at the boundary: there was nothing to trade on."""


# ------------------------------------------------------------------ market data


@dataclass
class MarketData:
    """Recorded bars or quotes as plain column lists (fast to iterate; no per-row objects).

    Bars: ``ts`` is each bar's open time (ns) and ``cols`` is (open, high, low, close, volume),
    the volume in the quote currency whatever the file had (``volume_unit``: the file's unit,
    ``volume_unit_given``: told rather than the format's default).
    Quotes: ``ts`` is the receive time (ns) and ``cols`` is (bid, ask, bid_size, ask_size).
    """

    kind: str
    fmt: str
    path: str
    ts: list[int]
    cols: tuple[list[float], ...]
    symbol: str | None = None
    timeframe_s: int | None = None  # bars: inferred from the timestamps
    volume_unit: str | None = None  # bars: "base" or "quote", as read from the file
    volume_unit_given: bool = False

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def first_ts(self) -> int | None:
        return self.ts[0] if self.ts else None

    @property
    def last_ts(self) -> int | None:
        return self.ts[-1] if self.ts else None

    def between(self, start_ns: int | None, end_ns: int | None) -> MarketData:
        """The rows with ``start <= ts < end`` (file order kept)."""
        if start_ns is None and end_ns is None:
            return self
        lo = -(1 << 63) if start_ns is None else start_ns
        hi = (1 << 63) - 1 if end_ns is None else end_ns
        ts = self.ts
        if all(ts[i] <= ts[i + 1] for i in range(len(ts) - 1)):
            from bisect import bisect_left

            a, b = bisect_left(ts, lo), bisect_left(ts, hi)
            keep: Any = slice(a, b)
            new_ts = ts[keep]
            cols = tuple(c[keep] for c in self.cols)
        else:
            idx = [i for i, t in enumerate(ts) if lo <= t < hi]
            new_ts = [ts[i] for i in idx]
            cols = tuple([c[i] for i in idx] for c in self.cols)
        return replace(self, ts=new_ts, cols=cols)

    @classmethod
    def from_bars(
        cls,
        ts_open_ns: Any,
        open_: Any,
        high: Any,
        low: Any,
        close: Any,
        volume: Any,
        *,
        symbol: str = DEFAULT_SYMBOL,
        timeframe_s: int | None = None,
        path: str = "<memory>",
    ) -> MarketData:
        """Bars from arrays or lists (e.g. numpy), converted to plain Python ints and floats."""
        ts = [int(t) for t in _tolist(ts_open_ns)]
        cols = tuple([float(x) for x in _tolist(c)] for c in (open_, high, low, close, volume))
        data = cls(BARS, "arrays", path, ts, cols, symbol, timeframe_s, "quote")
        if timeframe_s is None and len(ts) > 1:
            data.timeframe_s = infer_timeframe_s(ts)
        return data


def _tolist(x: Any) -> list[Any]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def infer_timeframe_s(ts: list[int]) -> int:
    """The most common positive gap between timestamps, in whole seconds."""
    arr = np.asarray(ts, dtype=np.int64)
    diffs = np.diff(arr)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise BacktestError(
            "cannot infer the bar timeframe from fewer than two distinct timestamps; "
            "pass --timeframe SECONDS"
        )
    values, counts = np.unique(diffs, return_counts=True)
    gap = int(values[int(np.argmax(counts))])
    if gap % NS_PER_SECOND:
        raise BacktestError(
            f"bars are {gap / NS_PER_SECOND:g} s apart; the engine needs whole seconds "
            "(pass --timeframe SECONDS)"
        )
    return gap // NS_PER_SECOND


def load_market_data(
    path: str | Path,
    *,
    timeframe_s: int | None = None,
    volume_unit: str | None = None,
    max_rows: int = MAX_ROWS,
) -> MarketData:
    """Read bars (OHLCV CSV, ccxt JSON) or quotes (bookTicker CSV); the format from the file.

    Every format is streamed and refused with one line at data row ``max_rows + 1``, so memory
    stays bounded by the limit (about 300 bytes a row) whatever the file's size. Bar volume is
    read in ``volume_unit`` (None: the format's default, see ``DEFAULT_VOLUME_UNIT``) and kept
    in the quote currency, the unit the core's displayed size (volume / close) expects.
    """
    if volume_unit is not None and volume_unit not in VOLUME_UNITS:
        raise BacktestError(
            f"volume unit must be one of {', '.join(VOLUME_UNITS)}, got {volume_unit!r}"
        )
    if max_rows < 1:
        raise BacktestError(f"--max-rows must be at least 1, got {max_rows}")
    p = Path(path)
    try:
        with open_data(p) as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not body:
        raise ReplayError(f"{p}: empty file; expected OHLCV bars or bookTicker quotes")
    if p.suffix.lower() == ".json" or p.stem.lower().endswith(".json") or body[:1] in (b"[", b"{"):
        data = _load_ccxt_json(p, max_rows)
    else:
        first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
        header = [h.strip() for h in first.split(",")]
        if "local_ts_ns" in header:
            data = _load_quotes_csv(p, max_rows)
        elif "timestamp" in header or set(header) & set(BAR_COLUMNS[1:]):
            data = _load_bars_csv(p, header, max_rows)
        else:
            shown = first if len(first) <= 80 else first[:77] + "..."
            raise ReplayError(
                f"{p}: row 1: cannot tell the format from the header {shown!r}; expected "
                f"{','.join(BAR_COLUMNS)} (OHLCV bars), {','.join(QUOTE_COLUMNS)} "
                "(bookTicker quotes) or a ccxt fetch_ohlcv JSON array"
            )
    if not data.ts:
        raise ReplayError(f"{p}: no data rows")
    if data.kind == BARS:
        data.volume_unit = volume_unit or DEFAULT_VOLUME_UNIT[data.fmt]
        data.volume_unit_given = volume_unit is not None
        if data.volume_unit == "base":  # base x close: the quote volume the core divides back
            data.cols[4][:] = [v * c for v, c in zip(data.cols[4], data.cols[3], strict=True)]
        data.timeframe_s = timeframe_s if timeframe_s is not None else infer_timeframe_s(data.ts)
    else:
        if volume_unit is not None:
            raise BacktestError(
                "--volume-unit is for bar data; bookTicker quotes carry their sizes in the base "
                "currency"
            )
        data.timeframe_s = timeframe_s
    return data


_TOO_MANY_HINT = "split the file by time, or raise the limit with --max-rows N"


def _load_bars_csv(p: Path, header: list[str], max_rows: int = MAX_ROWS) -> MarketData:
    with_symbol = "symbol" in header
    wanted = (*BAR_COLUMNS, "symbol") if with_symbol else BAR_COLUMNS
    parsers: tuple[Callable[[str], Any], ...] = (
        parse_timestamp_ns,
        float,
        float,
        float,
        float,
        float,
    )
    if with_symbol:  # interned: a million rows of one symbol hold one string
        parsers = (*parsers, lambda text: sys.intern(text.strip()))
    cols = _read_columns(p, wanted, parsers, max_rows, _TOO_MANY_HINT)
    symbol = None
    if with_symbol:
        names = cols.pop()
        symbol = names[0] if names else None
        for i, name in enumerate(names):
            if name != symbol:
                raise ReplayError(
                    f"{p}: row {i + 2}: symbol {name!r} differs from {symbol!r}; "
                    "a backtest file holds one symbol"
                )
    ts, *rest = cols
    return MarketData(BARS, "csv bars", str(p), ts, tuple(rest), symbol)


def _load_quotes_csv(p: Path, max_rows: int = MAX_ROWS) -> MarketData:
    parsers = (int, int, float, float, float, float)
    cols = _read_columns(p, QUOTE_COLUMNS, parsers, max_rows, _TOO_MANY_HINT)
    ts, _update_ids, bid, bid_qty, ask, ask_qty = cols
    return MarketData(QUOTES, "bookTicker csv", str(p), ts, (bid, ask, bid_qty, ask_qty))


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


_JSON_CHUNK = 1 << 20  # characters read at a time
_JSON_MAX_VALUE = 1 << 20  # the longest single value (a row, the symbol) the reader holds
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


class _JsonStream:
    """One JSON document read a value at a time from a text file, holding at most a couple of
    chunks: a ccxt OHLCV file of any size is parsed in bounded memory, row by row."""

    def __init__(self, path: Path, fh: Any) -> None:
        self.path = path
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines = 0  # newlines in the text already dropped from the buffer
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(_JSON_CHUNK)
        if not chunk:
            self.eof = True
            return False
        if self.pos > _JSON_CHUNK:  # drop what has been parsed
            self.lines += self.buf.count("\n", 0, self.pos)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end); not consumed."""
        while True:
            self.pos = _JSON_SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def take(self, expected: str, what: str) -> str:
        """Consume one of the ``expected`` characters, else raise naming ``what`` was due."""
        c = self.peek()
        if not c or c not in expected:
            found = repr(c) if c else "the end of the file"
            raise self.error(self.pos, f"not valid JSON (expected {what}, found {found})")
        self.pos += 1
        return c

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos <= _JSON_MAX_VALUE and self._more():
                    continue
                if len(self.buf) - self.pos > _JSON_MAX_VALUE:
                    raise self.error(self.pos, "a single JSON value over 1 MiB") from None
                raise self.error(exc.pos, f"not valid JSON ({exc.msg})") from None
            except ValueError:  # an integer past Python's 4,300-digit conversion limit
                raise self.error(self.pos, "a number too long to be a price or a volume") from None
            if end == len(self.buf) and self._more():
                continue  # a number at the end of the buffer may go on in the next chunk
            self.pos = end
            return value

    def error(self, pos: int, what: str) -> ReplayError:
        line = self.lines + self.buf.count("\n", 0, pos) + 1
        column = pos - self.buf.rfind("\n", 0, pos)
        return ReplayError(f"{self.path}: line {line} column {column}: {what}")


def _load_ccxt_json(p: Path, max_rows: int = MAX_ROWS) -> MarketData:
    try:
        fh = open_data(p, "r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    # Each row is one JSON array: far more closing brackets than twice the limit is refused
    # before any row is parsed (the exact limit is kept while streaming).
    try:
        arrays = count_beyond(p, 2 * max_rows + 1, b"]")
    except OSError as exc:
        fh.close()
        raise ReplayError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if arrays is not None:
        fh.close()
        raise ReplayError(
            f"{p}: more than {2 * max_rows + 1:,} JSON arrays, far over the {max_rows:,} "
            f"data rows held in memory at once; {_TOO_MANY_HINT}"
        )
    ts: list[int] = []
    cols: tuple[list[float], ...] = ([], [], [], [], [])
    symbol = None
    with fh:
        js = _JsonStream(p, fh)
        try:
            first = js.peek()
            found = first == "["
            if found:
                _read_ohlcv_rows(js, ts, cols, max_rows)
            elif first == "{":
                js.pos += 1
                if js.peek() == "}":
                    js.pos += 1
                else:
                    while True:
                        key = js.value()
                        js.take(":", "':'")
                        if key == "ohlcv" and js.peek() == "[" and not found:
                            _read_ohlcv_rows(js, ts, cols, max_rows)
                            found = True
                        else:
                            value = js.value()
                            if key == "symbol" and isinstance(value, str):
                                symbol = value
                        if js.take(",}", "',' or '}'") == "}":
                            break
            if not found:
                raise ReplayError(
                    f"{p}: expected a JSON array of [timestamp_ms, open, high, low, close, "
                    'volume] rows (ccxt fetch_ohlcv), or an object with an "ohlcv" array'
                )
            if js.peek():
                raise js.error(js.pos, "not valid JSON (extra data after the document)")
        except UnicodeDecodeError:
            raise ReplayError(f"{p}: not UTF-8 text") from None
        except RecursionError:
            raise ReplayError(
                f"{p}: line {js.lines + 1}: JSON nested too deeply; a ccxt OHLCV row is "
                "[timestamp_ms, open, high, low, close, volume]"
            ) from None
        except UNPACK_ERRORS as exc:
            raise ReplayError(f"{p}: cannot read ({exc})") from None
    return MarketData(BARS, "ccxt json", str(p), ts, cols, symbol)


def _read_ohlcv_rows(
    js: _JsonStream, ts: list[int], cols: tuple[list[float], ...], max_rows: int
) -> None:
    """The ``[[ms, open, high, low, close, volume], ...]`` array at the stream's position."""
    p = js.path
    names = ("timestamp", "open", "high", "low", "close", "volume")
    appenders = [c.append for c in cols]
    js.take("[", "'['")
    if js.peek() == "]":
        js.pos += 1
        return
    i = 0
    while True:
        row = js.value()
        i += 1
        if i > max_rows:
            raise ReplayError(too_many_rows(p, max_rows, _TOO_MANY_HINT))
        if not (isinstance(row, list) and len(row) == 6):
            shown = json.dumps(row)[:60]
            raise ReplayError(
                f"{p}: row {i}: expected [timestamp_ms, open, high, low, close, volume], "
                f"found {shown}"
            )
        t = row[0]
        if isinstance(t, bool) or not (
            isinstance(t, int) or (isinstance(t, float) and t.is_integer())
        ):
            raise ReplayError(f"{p}: row {i}: cannot parse timestamp {t!r} (epoch milliseconds)")
        ts.append(int(t) * NS_PER_MS)
        for j in range(1, 6):
            value = row[j]
            if j == 5 and value is None:  # ccxt leaves volume undefined on some venues
                value = 0.0
            try:
                appenders[j - 1](_num(value))
            except ValueError:
                raise ReplayError(f"{p}: row {i}: cannot parse {names[j]} {value!r}") from None
        if js.take(",]", "',' or ']'") == "]":
            return


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
        sid = re.sub(r"[^A-Za-z0-9_.-]", "_", sid)[:40] or "strategy"
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
            tf = infer_timeframe_s(data.ts)
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

    doc = base.model_dump()
    doc["strategies"] = [strat]
    doc["engine"]["mode"] = "paper"
    grid = _grid(base, symbol)
    doc["market"]["source"] = "replay"
    doc["market"]["replay"] = {
        "path": data.path,
        "kind": data.kind,
        "symbol": symbol,
        "speed": "max",
        **grid,
    }
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
    try:
        cfg = parse_config(doc)
        build_strategies(cfg.strategies)
    except ConfigError as exc:
        raise BacktestError([f"config error: {p}" for p in exc.problems]) from None
    return cfg


def _grid(base: Config, symbol: str) -> dict[str, float]:
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


# ------------------------------------------------------------------ what was on


def safety_settings(cfg: Config, opts: BacktestOptions) -> dict[str, Any]:
    """Every breaker, limit and gate of the run as it acted: on or off, its limit and why.

    The report prints this so that "breakers on" never hides one that a backtest turns off
    (unreviewed fills, approvals forced to auto) or one that cannot act here (clock drift)."""
    strat = cfg.strategies[0]
    b = cfg.breakers_for(strat.id)
    on = opts.breakers
    off = "off (--no-breakers)"
    ccy = cfg.portfolio.quote_currency

    def breaker(name: str, scope: str, limit: str, action: str, why_off: str = "") -> dict:
        state = "off" if why_off else ("on" if on else "off")
        return {
            "breaker": name,
            "scope": scope,
            "state": state,
            "limit": limit,
            "action": action,
            "note": why_off or ("" if on else f"{limit}: {off}"),
        }

    rl = b.rolling_loss
    g = cfg.safety.breakers
    breakers = [
        breaker(
            "consecutive_losses",
            "strategy",
            f"{b.consecutive_losses} losing trades in a row",
            "pause_strategy",
        ),
        breaker(
            "consecutive_losses",
            "global",
            f"{g.global_consecutive_losses} losing trades in a row",
            "halt_engine",
        ),
        breaker(
            "rolling_loss",
            "strategy",
            f"{rl.max_loss_pct:g}% of equity within {rl.window_s:g} s",
            "pause_strategy",
        ),
        breaker(
            "rolling_loss",
            "global",
            f"{g.rolling_loss.max_loss_pct:g}% of equity within {g.rolling_loss.window_s:g} s",
            "halt_engine",
        ),
        breaker("orders_per_minute", "strategy", f"{b.orders_per_minute} orders", "pause_strategy"),
        breaker(
            "signal_rate",
            "strategy",
            f"{b.signal_rate_multiple:g} x {b.baseline_signals_per_hour:g} signals per hour",
            "pause_strategy",
        ),
        breaker(
            "consecutive_rejects",
            "strategy",
            f"{b.consecutive_rejects} rejected orders in a row",
            "pause_strategy",
        ),
        breaker(
            "slippage",
            "strategy",
            f"{b.slippage_excess_pct:g}% above the model over {b.slippage_window_fills} fills",
            "pause_strategy",
        ),
        breaker(
            "stale_feed",
            "symbol",
            f"no data for {cfg.market.validation.stale_after_s:g} s (on the data's clock)",
            "block_symbol",
        ),
        breaker(
            "clock_drift",
            "global",
            f"{g.clock_drift_halt_ms:g} ms",
            "halt_engine",
            "off (a backtest runs on the data's clock: there is no wall clock to drift)",
        ),
        breaker(
            "unreviewed_fills",
            "strategy",
            "none",
            "pause_strategy",
            "off (nobody reviews fills in a backtest)",
        ),
    ]
    r = cfg.risk
    ks = cfg.safety.kill_switch
    return {
        "breakers": breakers,
        "rearm": f"{b.rearm}, cool-down {b.cooldown_s:g} s",
        "limits": {
            "state": "on" if opts.limits else "lifted to their most permissive (--no-limits)",
            "max_order_notional": f"{r.max_order_notional:,.2f} {ccy}",
            "max_position_fraction": f"{r.max_position_fraction:g} of equity",
            "max_open_positions": f"{r.max_open_positions}",
            "max_gross_exposure_fraction": f"{r.max_gross_exposure_fraction:g} of equity",
            "price_collar_pct": f"{r.price_collar_pct:g}%",
            "strategy_throttle": (
                f"{r.strategy_throttle.max_orders} orders per {r.strategy_throttle.per_seconds:g} s"
            ),
            "global_throttle": (
                f"{r.global_throttle.max_orders} orders per {r.global_throttle.per_seconds:g} s"
            ),
            "always_on": "tick/lot grid, cash, quote freshness and price checks",
        },
        "kill_switch": {
            "daily_loss_limit_pct": ks.daily_loss_limit_pct,
            "drawdown_limit_pct": ks.drawdown_limit_pct,
            "auto_level": ks.auto_level,
            "note": "" if opts.limits else "lifted to 100% by --no-limits",
        },
        "approvals": "auto for every order (forced: nobody approves in a backtest)",
    }


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

    def blocked(self, strategy_id: str, symbol: str) -> str | None:
        return None

    def quiet_until(self, symbol: str, ts: int) -> int:
        return (1 << 63) - 1

    def advance(self, symbol: str, ts: int) -> None:
        return None


# ------------------------------------------------------------------ result


@dataclass
class BacktestResult:
    """Everything one run produced; ``to_dict()`` is the JSON form (``--json``)."""

    header: dict[str, Any]
    metrics: Metrics
    trips: list[RoundTrip]
    fills: list[Fill]
    fill_refs: list[float]  # the reference mid / bar price each fill executed against
    fill_realized: list[float]  # realised PnL of each fill (gross of fee), as the portfolio
    fill_positions: list[float]  # the symbol's net position after each fill
    ts: np.ndarray  # int64 ns: equity sample times (the first is the start)
    equity: np.ndarray  # float64
    position: np.ndarray  # float64: open positions (count) at each sample
    counters: dict[str, int]
    denied: dict[str, int]
    rejected: dict[str, int]
    safety_notes: list[str]
    events: list[EngineEvent]  # breaker and safety events, in order
    unfilled: int
    events_processed: int
    elapsed_s: float
    final_portfolio: dict[str, Any]

    @property
    def events_per_s(self) -> float:
        return self.events_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def fill_rows(self) -> list[dict[str, Any]]:
        """Every fill as a flat row (the ``--trades`` CSV)."""
        rows = []
        for f, ref, realized, pos in zip(
            self.fills, self.fill_refs, self.fill_realized, self.fill_positions, strict=True
        ):
            sign = 1.0 if f.side == "buy" else -1.0
            rows.append(
                {
                    "fill_id": f.fill_id,
                    "order_id": f.client_order_id,
                    "strategy": f.strategy_id,
                    "symbol": f.symbol,
                    "side": str(f.side),
                    "qty": f.qty,
                    "price": f.price,
                    "fee": f.fee,
                    "liquidity": str(f.liquidity),
                    "ts_ns": f.ts,
                    "time": iso(f.ts, "milliseconds"),
                    "ref_price": ref,
                    "slippage": (f.price - ref) * f.qty * sign,
                    "realized_pnl": realized,
                    "position_after": pos,
                }
            )
        return rows

    def curve(self, points: int = 500) -> list[list[float]]:
        """The equity curve downsampled to at most ``points`` [ts_ns, equity] pairs."""
        n = self.equity.size
        if n == 0:
            return []
        idx = np.unique(np.linspace(0, n - 1, min(points, n)).astype(np.int64))
        return [[int(self.ts[i]), float(self.equity[i])] for i in idx]

    def to_dict(self, *, curve_points: int = 500, include_fills: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "header": self.header,
            "metrics": self.metrics.to_dict(),
            "trades": [t.to_dict() for t in self.trips],
            "orders": {
                "submitted": self.counters.get("submitted", 0),
                "denied": self.counters.get("denied", 0),
                "denied_by_code": dict(self.denied),
                "fills": len(self.fills),
                "unfilled_at_end": self.unfilled,
            },
            "rejected_at_boundary": dict(self.rejected),
            "safety_events": list(self.safety_notes),
            "counters": dict(self.counters),
            "final_portfolio": self.final_portfolio,
            "equity_curve": self.curve(curve_points),
            "run": {
                "events": self.events_processed,
                "seconds": self.elapsed_s,
                "events_per_s": self.events_per_s,
            },
        }
        if include_fills:
            out["fills"] = self.fill_rows()
        return out


def write_trades_csv(result: BacktestResult, path: str | Path) -> int:
    """Write every fill to a CSV file; returns the number of rows."""
    rows = result.fill_rows()
    columns = [
        "fill_id",
        "order_id",
        "strategy",
        "symbol",
        "side",
        "qty",
        "price",
        "fee",
        "liquidity",
        "ts_ns",
        "time",
        "ref_price",
        "slippage",
        "realized_pnl",
        "position_after",
    ]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


# ------------------------------------------------------------------ the run


class _Cancelled(Exception):
    pass


class _Run:
    """One backtest: the core, the broker and the portfolio driven as the live engine does."""

    def __init__(self, cfg: Config, opts: BacktestOptions) -> None:
        self.cfg = cfg
        self.opts = opts
        try:
            strategies = build_strategies(cfg.strategies)
        except ConfigError as exc:
            raise BacktestError([f"config error: {p}" for p in exc.problems]) from None
        if not strategies:
            raise BacktestError("nothing to backtest: the config has no enabled strategy")
        self.symbol = strategies[0].symbol
        self.instruments = _instruments(cfg)
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
        if not opts.breakers:
            core.breakers = DisabledBreakers(cfg)
        self.none = opts.slippage == "none"
        self.half_spread = opts.spread_bps / 20_000.0
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
                if item.outcome == "denied":
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
        intent = sub.intent
        why = core.safety.gate(
            intent.strategy_id, core.reduces_exposure(intent), intent.origin == "flatten"
        )
        if why is not None:
            order = sub.order
            order.status = OrderStatus.REJECTED
            order.reason = f"not sent: {why}"
            self.handle(core.on_broker([OrderUpdate(order, order.ts_updated)]))
            return
        self.handle(core.on_broker(self.broker.submit(sub.order, core.now)))

    def cancel(self, cancel: CancelOrder) -> None:
        updates = self.broker.cancel(cancel.client_order_id, self.core.now)
        for update in updates:
            if not update.order.reason:
                update.order.reason = cancel.reason
        if updates:
            self.handle(self.core.on_broker(updates))

    def execute(self, q: Quote, ref: float) -> None:
        """Show the broker one quote; its fills go to the core (``ref``: the reference mid)."""
        items = self.broker.on_quote(q)
        if items:
            self.ref = ref
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
    ) -> tuple[list[int], list[float], list[float], int]:
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
        ts_l, o_l, h_l, l_l, c_l, v_l = data.ts, *data.cols
        series = BarSeries(sym, tf, venue, ts_l, o_l, h_l, l_l, c_l, v_l)
        n = len(ts_l)
        wu = min(self.opts.warmup, n)
        tf_ns = tf * NS_PER_SECOND
        if wu:
            check = core.validator.check_bar
            history = [
                b
                for b in map(
                    Bar,
                    repeat(sym, wu),
                    ts_l[:wu],
                    repeat(tf, wu),
                    o_l[:wu],
                    h_l[:wu],
                    l_l[:wu],
                    c_l[:wu],
                    v_l[:wu],
                    repeat(venue, wu),
                )
                if check(b) is None
            ]
            core.warm_up(history)
        eq: list[float] = [p.equity]
        pos: list[float] = [0.0]
        on_bars = core.on_bars
        open_orders = core.open_orders
        after_bar = self.after_bar
        step = self.step
        i = wu
        for start in range(wu, n, CHUNK):
            stop = min(n, start + CHUNK)
            while i < stop:
                if not open_orders:
                    k, out = on_bars(series, i, stop, eq)
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
            if progress is not None:
                progress(stop - wu, n - wu)
            if cancel is not None and cancel.is_set():
                raise _Cancelled
        first = ts_l[wu] if wu < n else (ts_l[-1] if n else 0)
        # Samples: the start (the first traded bar's open), then each bar's close.
        ts = [first] + [t + tf_ns for t in ts_l[wu:]]
        return ts, eq, pos, n - wu

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
                size = max(bar.volume / op, 1e-9)
                t = max(bar.ts_open, self.arrival())
                self.execute(self.bar_quote(op, size, t), op)
            self.after_bar(core.process_bar(bar), bar.close, bar.volume)
        eq.append(self.portfolio.equity)
        pos.append(self.portfolio.open_position_count)

    def after_bar(self, out: list[Any], close: float, volume: float) -> None:
        """What follows ``on_bar``'s result for a bar: the orders, then the fills the fill
        model gives them (signal bar's close, or the bar's quote in ``live``)."""
        open_orders = self.core.open_orders
        mode = self.opts.fill
        if out and (len(out) > 1 or type(out[0]) is not MarksRecorded):
            self.handle(out)
            if mode == "close" and open_orders:
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
    ) -> tuple[list[int], list[float], list[float], int]:
        core, p = self.core, self.portfolio
        sym, venue = self.symbol, self.venue
        ts_l, bid_l, ask_l, bs_l, as_l = data.ts, *data.cols
        n = len(ts_l)
        tfs = sorted({s.timeframe_s for s in self.cfg.strategies})
        tf_ns = tfs[0] * NS_PER_SECOND
        i0 = self._warm_up_quotes(data, tfs) if self.opts.warmup else 0
        eq: list[float] = [p.equity]
        pos: list[float] = [0.0]
        ts: list[int] = [ts_l[i0] if i0 < n else (ts_l[-1] if n else 0)]
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
            chunk_ts = ts_l[start:stop]
            feed = map(
                Quote,
                repeat(sym, k),
                bid_l[start:stop],
                ask_l[start:stop],
                bs_l[start:stop],
                as_l[start:stop],
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
                        src = prev if close_mode and prev is not None else q
                        self.execute(self.quote_at(src, self.arrival()), src.mid)
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
                raise _Cancelled
        if n and ts[-1] != ts_l[-1]:
            ts.append(ts_l[-1])
            eq.append(p.equity)
            pos.append(p.open_position_count)
        return ts, eq, pos, n - i0

    def _warm_up_quotes(self, data: MarketData, tfs: list[int]) -> int:
        """Feed the first ``warmup`` bars (built from quote mids, as the core builds them) to
        the strategies' warm-up; return the index of the first quote to trade on."""
        core = self.core
        sym, venue = self.symbol, self.venue
        builders = [_BarBuilder(sym, tf, venue) for tf in tfs]
        primary = builders[0]
        validator = QuoteValidator(self.cfg.market.validation.max_spread_bps)
        history: list[Bar] = []
        done = 0
        ts_l, bid_l, ask_l, bs_l, as_l = data.ts, *data.cols
        i = 0
        for i in range(len(ts_l)):
            q = Quote(sym, bid_l[i], ask_l[i], bs_l[i], as_l[i], ts_l[i], ts_l[i], venue)
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
                break
        else:
            i = len(ts_l)
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


def _sizing_text(cfg: Config) -> str:
    s = cfg.strategies[0].sizing
    if s.model == "fixed_qty":
        return f"fixed_qty {s.qty:g}"
    if s.model == "fixed_fraction":
        return f"fixed_fraction {s.fraction:g} of equity"
    if s.model == "volatility":
        return f"volatility (risk {s.risk_fraction:g} of equity per {s.atr_multiple:g} ATR)"
    return f"kelly (win rate {s.win_rate:g}, payoff {s.payoff_ratio:g}, x{s.kelly_fraction:g})"


def _fill_text(cfg: Config, opts: BacktestOptions, kind: str) -> str:
    if opts.fill == "close":
        return "signal bar's close (immediate, stamped 1 ns after the close)"
    if opts.fill == "next-open":
        return "next bar's open"
    paper = cfg.paper
    where = "the next bar's close" if kind == BARS else "the first quote after arrival"
    return (
        f"live paper broker ({paper.latency_median_ms:g} ms median latency, "
        f"sigma {paper.latency_sigma:g}; fills on {where})"
    )


def _volume_header(cfg: Config, opts: BacktestOptions, data: MarketData, run: _Run) -> dict:
    """What the fill model took as the market's size, and how often it capped an order."""
    if data.kind == BARS:
        unit = data.volume_unit or "quote"
        given = "--volume-unit" if data.volume_unit_given else f"default for {data.fmt}"
        displayed = "the bar's volume" if unit == "base" else "the bar's volume / close"
    else:
        unit, given, displayed = "base", "bookTicker sizes", "the quote's bid / ask size"
    if opts.slippage == "none":
        behaviour = "slippage none: the displayed size is unlimited, no order is capped"
    else:
        behaviour = (
            f"an order beyond the displayed size walks impact levels of one displayed size each, "
            f"{cfg.paper.impact_bps_per_size:g} bps further per level, at most "
            f"{PaperBroker.max_levels} levels; the rest is canceled (exceeds simulated depth)"
        )
    return {
        "unit": unit,
        "unit_from": given,
        "displayed_size": displayed,
        "fill_model": behaviour,
        "capped_orders": run.capped_orders,
        "capped_fills": run.capped_fills,
        "depth_exhausted_orders": run.depth_exhausted,
    }


def _note(ev: EngineEvent) -> str:
    when = iso(ev.ts).replace("T", " ").removesuffix("Z")
    if isinstance(ev, BreakerChanged):
        c = ev.change
        if c["tripped"]:
            return (
                f"{when} breaker {c['breaker']} ({c['scope']}) tripped -> {c['action']}: "
                f"{c['reason']}"
            )
        return f"{when} breaker {c['breaker']} ({c['scope']}) re-armed: {c['reason']}"
    if isinstance(ev, SafetyChanged):
        return f"{when} {ev.what} {ev.subject} by {ev.by}: {ev.reason}"
    return f"{when} {ev.kind}"


def run_backtest_core(
    cfg: Config,
    data: MarketData,
    opts: BacktestOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> BacktestResult:
    """Run the engine core over ``data`` with ``cfg`` (see ``build_backtest_config``).

    Safe to call from a worker thread (nothing global is touched); ``progress(done, total)`` is
    called every 65,536 events and a set ``cancel`` (anything with ``is_set()``, e.g. a
    ``threading.Event``) stops the run with ``BacktestError("cancelled")``.
    """
    opts = opts or BacktestOptions()
    data = data.between(opts.start_ns, opts.end_ns)
    if not data.ts:
        raise BacktestError(
            "no data between "
            f"{iso(opts.start_ns) if opts.start_ns is not None else 'the start'} and "
            f"{iso(opts.end_ns) if opts.end_ns is not None else 'the end'}"
        )
    run = _Run(cfg, opts)
    t0 = time.perf_counter()
    try:
        if data.kind == BARS:
            tf = opts.timeframe_s or data.timeframe_s or infer_timeframe_s(data.ts)
            ts, eq, pos, processed = run.run_bars(data, tf, progress, cancel)
            interval = tf
            warm = min(opts.warmup, len(data))
        else:
            ts, eq, pos, processed = run.run_quotes(data, progress, cancel)
            interval = min(s.timeframe_s for s in cfg.strategies)
            warm = opts.warmup
    except _Cancelled:
        raise BacktestError("cancelled") from None
    elapsed = time.perf_counter() - t0
    core = run.core
    rejected = dict(core.validator.rejected)
    if core.validator.accepted == 0 and rejected:  # (not a run whose warm-up took it all)
        codes = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items()))
        raise NoUsableDataError(
            f"all {len(data):,} {data.kind} in {data.path} were rejected at the boundary "
            f"({codes}); nothing to backtest"
        )
    unfilled = run.finish()
    p = run.portfolio
    marks = {s: pos_.mark for s, pos_ in p.positions.items()}
    metrics, trips = compute_metrics(
        np.asarray(ts, dtype=np.int64),
        np.asarray(eq, dtype=np.float64),
        np.asarray(pos, dtype=np.float64),
        run.fills,
        run.refs,
        interval,
        marks,
    )
    strat = cfg.strategies[0]
    header = {
        "strategy_id": strat.id,
        "strategy_kind": strat.kind,
        "params": dict(strat.params),
        "symbol": run.symbol,
        "data_path": data.path,
        "data_format": data.fmt,
        "data_kind": data.kind,
        "events": len(data),
        "warmup_bars": warm,
        "first_ts": data.first_ts,
        "last_ts": data.last_ts,
        "first_time": iso(data.first_ts),
        "last_time": iso(data.last_ts),
        "timeframe_s": interval,
        "fill": opts.fill,
        "fill_description": _fill_text(cfg, opts, data.kind),
        "slippage": opts.slippage,
        "spread_bps": opts.spread_bps,
        "fee_bps": cfg.paper.taker_fee_bps,
        "sizing": _sizing_text(cfg),
        "allow_short": strat.allow_short,
        "breakers": opts.breakers,
        "limits": opts.limits,
        "safety": safety_settings(cfg, opts),
        "rows": {
            "read": len(data),
            "accepted": core.validator.accepted,
            "rejected": sum(rejected.values()),
            "rejected_by_code": rejected,
        },
        "volume": _volume_header(cfg, opts, data, run),
        "starting_cash": cfg.portfolio.starting_cash,
        "quote_currency": cfg.portfolio.quote_currency,
        "start": iso(opts.start_ns) if opts.start_ns is not None else None,
        "end": iso(opts.end_ns) if opts.end_ns is not None else None,
    }
    snap = p.snapshot()
    final = {
        "cash": snap["cash"],
        "equity": snap["equity"],
        "realized_pnl": snap["realized_pnl"],
        "unrealized_pnl": snap["unrealized_pnl"],
        "fees_paid": snap["fees_paid"],
        "positions": {
            s: {"qty": v["qty"], "avg_price": v["avg_price"], "mark": v["mark"]}
            for s, v in snap["positions"].items()
            if v["qty"]
        },
    }
    return BacktestResult(
        header=header,
        metrics=metrics,
        trips=trips,
        fills=run.fills,
        fill_refs=run.refs,
        fill_realized=run.realized,
        fill_positions=run.positions,
        ts=np.asarray(ts, dtype=np.int64),
        equity=np.asarray(eq, dtype=np.float64),
        position=np.asarray(pos, dtype=np.float64),
        counters=dict(core.counters),
        denied=dict(run.denied),
        rejected=rejected,
        safety_notes=[_note(e) for e in run.notable],
        events=run.notable,
        unfilled=unfilled,
        events_processed=processed,
        elapsed_s=elapsed,
        final_portfolio=final,
    )


def run_backtest(
    base: Config,
    data: MarketData | str | Path,
    opts: BacktestOptions | None = None,
    **kwargs: Any,
) -> BacktestResult:
    """Load (if a path), build the run's config from ``base`` and run it."""
    opts = opts or BacktestOptions()
    if not isinstance(data, MarketData):
        data = load_market_data(data, timeframe_s=opts.timeframe_s)
    cfg = build_backtest_config(base, data, opts)
    return run_backtest_core(cfg, data, opts, **kwargs)


def compare_slippage(
    base: Config, data: MarketData, opts: BacktestOptions, **kwargs: Any
) -> tuple[BacktestResult, BacktestResult]:
    """The same backtest with the slippage model and without it: (with, without)."""
    with_model = run_backtest(base, data, replace(opts, slippage="model"), **kwargs)
    without = run_backtest(base, data, replace(opts, slippage="none"), **kwargs)
    return with_model, without
