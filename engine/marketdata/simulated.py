"""The embedded default market: a deterministic, realistic-enough L1 quote stream.

Paper trading must work with no keys and no network, and tests must be repeatable, so the
market is a seeded stochastic process rather than a recording:

* **Arrivals**: each symbol's quotes arrive as a Poisson process (exponential inter-arrival,
  mean ``quote_interval_ms``); all symbols are merged into one time-ordered stream.
* **Mid**: a log random walk whose per-step standard deviation is the annual volatility
  scaled by ``sqrt(dt / year)`` for the actual time step (a 24/7 year). Symbols share a
  common market factor (``FACTOR_SHARE`` of each one's variance), because crypto moves together.
* **Volatility clustering**: a market-wide **2-state regime switch** (calm / turbulent) in
  continuous time, with exponential holding times. The turbulent regime has ``VOL_RATIO``
  times the calm volatility; the two levels are normalised so the long-run average variance
  equals ``annual_volatility**2``. (A regime switch, not GARCH, because it vectorises.)
* **Jumps**: a quote jumps with probability ``jump_probability`` on average; the rate is
  scaled by the regime's variance multiplier (about 0.5x calm, 3x turbulent, mean 1) so jumps
  cluster with volatility. The size is log-normal with median ``jump_size_bps`` and a random
  sign; the spread blows out on a jump quote. Jump variance comes on top of
  ``annual_volatility`` (which is the diffusion's): with the default 0.0005 per quote at
  4 quotes/s and 50 bps, jumps dominate and realised volatility is about 1.5-1.9, not 0.6.
* **Spread**: ``spread_bps`` in the calm regime, scaled with the regime's volatility, with a
  little log-normal noise, capped at ``MAX_SPREAD_BPS`` and never below one tick. The bid is
  rounded down and the ask up to the tick grid, so ``ask > bid`` always.
* **Sizes**: log-normal around ``typical_size`` (thinner when turbulent), rounded to the lot
  size and at least one lot.
* **History bars**: the same mid process on a regular grid (up to 64 steps per bar), mids
  rounded to the tick; volume is a synthetic traded size that rises with volatility.

Work is done in numpy windows of about ``CHUNK`` quotes; only building the ``Quote`` objects
is per-quote Python.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat

import numpy as np

from engine.config import SimulatedMarketConfig, SymbolSpec
from engine.types import NS_PER_SECOND, Bar, Instrument, Quote

YEAR_NS = 365 * 24 * 3600 * NS_PER_SECOND
CHUNK = 4096  # quotes generated per numpy window (all symbols together)

CALM_MEAN_S = 600.0  # mean holding time of the calm regime
TURBULENT_MEAN_S = 150.0  # mean holding time of the turbulent regime
VOL_RATIO = 2.5  # turbulent vol / calm vol
FACTOR_SHARE = 0.6  # share of each symbol's return variance from the common market factor
MAX_SPREAD_BPS = 400.0  # below the validator's default 500 bps limit
SPREAD_NOISE = 0.25  # sigma of the log-normal spread noise
JUMP_SPREAD_MULT = 4.0  # spread multiplier on a jump quote
JUMP_SIZE_SIGMA = 0.5  # sigma of the log-normal jump size
SIZE_SIGMA = 0.7  # sigma of the log-normal displayed size
MAX_HISTORY_STEPS_PER_BAR = 64

_P_TURBULENT = TURBULENT_MEAN_S / (CALM_MEAN_S + TURBULENT_MEAN_S)
_M_CALM = 1.0 / math.sqrt((1.0 - _P_TURBULENT) + _P_TURBULENT * VOL_RATIO**2)
# Index by regime state: 0 = calm, 1 = turbulent.
_VOL_MULT = np.array([_M_CALM, _M_CALM * VOL_RATIO])
_HOLD_MEAN_NS = (CALM_MEAN_S * NS_PER_SECOND, TURBULENT_MEAN_S * NS_PER_SECOND)


def resolve_start_ns(start: str, now_ns: int) -> int:
    """Turn the config's ``start`` ("now" or ISO-8601; naive means UTC) into epoch ns."""
    if start == "now":
        return now_ns
    dt = datetime.fromisoformat(start)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000


_QUOTE_FIELDS = ("symbol", "bid", "ask", "bid_size", "ask_size", "ts_exchange", "ts_recv", "venue")


def _quote_factory() -> Callable[..., Quote]:
    """A positional Quote constructor about twice as fast as the frozen dataclass __init__.

    Building the Quote objects is most of the stream's cost, and a frozen dataclass sets each
    field through ``object.__setattr__``. The fast path writes the slots directly. It is used
    only while Quote is exactly the plain slotted dataclass it was written for (same fields,
    no ``__post_init__``); otherwise the real constructor is returned.
    """
    names = tuple(f.name for f in dataclasses.fields(Quote))
    slots = [Quote.__dict__.get(n) for n in names]
    if (
        names != _QUOTE_FIELDS
        or hasattr(Quote, "__post_init__")
        or not all(isinstance(d, types.MemberDescriptorType) for d in slots)
    ):
        return Quote
    s0, s1, s2, s3, s4, s5, s6, s7 = (d.__set__ for d in slots)  # type: ignore[union-attr]
    new = object.__new__

    def make(
        symbol: str,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
        ts_exchange: int,
        ts_recv: int,
        venue: str,
    ) -> Quote:
        q = new(Quote)
        s0(q, symbol)
        s1(q, bid)
        s2(q, ask)
        s3(q, bid_size)
        s4(q, ask_size)
        s5(q, ts_exchange)
        s6(q, ts_recv)
        s7(q, venue)
        return q

    return make


_make_quote = _quote_factory()


def _decimals(step: float) -> int:
    """Decimal places of a tick or lot size, to round generated values to clean decimals."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


class _Regime:
    """The market-wide calm/turbulent state as a continuous-time two-state Markov chain."""

    __slots__ = ("next_switch", "state")

    def __init__(self, state: int, next_switch: int) -> None:
        self.state = state
        self.next_switch = next_switch

    def multipliers(self, rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
        """Volatility multiplier at each (sorted) time; advances the chain past the last one."""
        if times.size == 0:
            return np.empty(0)
        t_end = int(times[-1])
        start_state = self.state
        switches: list[int] = []
        while self.next_switch <= t_end:
            switches.append(self.next_switch)
            self.state ^= 1
            hold = rng.exponential(_HOLD_MEAN_NS[self.state])
            self.next_switch += max(1, int(hold))
        if not switches:
            return np.full(times.size, _VOL_MULT[start_state])
        passed = np.searchsorted(np.asarray(switches, dtype=np.int64), times, side="right")
        return _VOL_MULT[(start_state + passed) & 1]


class SimulatedMarket:
    """A seeded multi-symbol market: warm-up bars, then an endless merged quote stream.

    Same seed, config and ``start_ns`` give the identical history and stream; every call to
    ``quotes()`` replays the stream from the start. The history is generated by the same
    process and is anchored to end exactly at the start price, so the live stream continues
    from the last history close with no jump (and ``start_prices`` resumes where a previous
    run stopped).
    """

    def __init__(
        self,
        cfg: SimulatedMarketConfig,
        start_ns: int,
        start_prices: dict[str, float] | None = None,
        venue: str = "sim",
    ) -> None:
        self.cfg = cfg
        self.start_ns = int(start_ns)
        self.venue = venue
        self.symbols: list[str] = list(cfg.symbols)
        self._specs: list[SymbolSpec] = [cfg.symbols[s] for s in self.symbols]
        prices = dict(start_prices or {})
        self._p0: list[float] = []
        for sym, spec in zip(self.symbols, self._specs, strict=True):
            p = float(prices.get(sym, spec.initial_price))
            if not (math.isfinite(p) and p > 0):
                raise ValueError(f"start price for {sym} must be a positive number, got {p!r}")
            self._p0.append(p)
        self._interval_ns = cfg.quote_interval_ms * 1e6
        seq = np.random.SeedSequence(cfg.seed)
        self._hist_seed, self._live_seed = seq.spawn(2)
        self._tick_dec = [_decimals(s.tick_size) for s in self._specs]
        self._lot_dec = [_decimals(s.lot_size) for s in self._specs]
        self._history: list[Bar] | None = None
        self._end_regime: tuple[int, int] | None = None

    def instruments(self) -> dict[str, Instrument]:
        """The trading grid of each symbol, from its SymbolSpec."""
        return {
            sym: Instrument(
                symbol=sym,
                venue=self.venue,
                tick_size=spec.tick_size,
                lot_size=spec.lot_size,
                min_qty=spec.min_qty,
                min_notional=spec.min_notional,
            )
            for sym, spec in zip(self.symbols, self._specs, strict=True)
        }

    # ----------------------------------------------------------------------------- history

    def history(self) -> list[Bar]:
        """``history_bars`` bars per symbol ending at ``start_ns``, ordered by time then symbol."""
        if self._history is None:
            self._build_history()
        assert self._history is not None
        return list(self._history)

    def _build_history(self) -> None:
        cfg = self.cfg
        rng = np.random.default_rng(self._hist_seed)
        n_bars = cfg.history_bars
        tf_ns = cfg.history_timeframe_s * NS_PER_SECOND
        t_begin = self.start_ns - n_bars * tf_ns
        state = int(rng.random() < _P_TURBULENT)
        regime = _Regime(state, t_begin + max(1, int(rng.exponential(_HOLD_MEAN_NS[state]))))
        if n_bars == 0:
            self._history = []
            self._end_regime = (regime.state, regime.next_switch)
            return
        k = round(tf_ns / self._interval_ns)
        k = min(max(k, 1), MAX_HISTORY_STEPS_PER_BAR)
        n_steps = n_bars * k
        dt_ns = tf_ns / k
        grid = t_begin + np.rint(np.arange(1, n_steps + 1) * dt_ns).astype(np.int64)
        mult = regime.multipliers(rng, grid)
        # Leave the chain exactly as it stands at start_ns for the live stream.
        regime.multipliers(rng, np.array([self.start_ns], dtype=np.int64))
        self._end_regime = (regime.state, regime.next_switch)
        step_sd = mult * math.sqrt(dt_ns / YEAR_NS)
        factor = step_sd * rng.standard_normal(n_steps)
        quotes_per_step = dt_ns / self._interval_ns
        columns = []
        for i, spec in enumerate(self._specs):
            sigma = spec.annual_volatility
            idio = step_sd * rng.standard_normal(n_steps)
            ret = sigma * (math.sqrt(FACTOR_SHARE) * factor + math.sqrt(1 - FACTOR_SHARE) * idio)
            p_jump = 1.0 - (1.0 - spec.jump_probability * mult * mult) ** quotes_per_step
            ret += self._jumps(rng, spec, rng.random(n_steps) < p_jump)
            walk = np.concatenate(([0.0], np.cumsum(ret)))
            # Anchor the path so that it ends exactly at the start price.
            path = self._p0[i] * np.exp(walk - walk[-1])
            tick = spec.tick_size
            px = np.round(np.maximum(np.rint(path / tick), 1.0) * tick, self._tick_dec[i])
            body = px[:-1].reshape(n_bars, k)
            opens = body[:, 0]
            closes = px[k::k]
            highs = np.maximum(body.max(axis=1), closes)
            lows = np.minimum(body.min(axis=1), closes)
            traded = (
                spec.typical_size
                * 0.2
                * quotes_per_step
                * (mult / _M_CALM)
                * np.exp(0.5 * rng.standard_normal(n_steps))
            )
            vol = np.round(traded.reshape(n_bars, k).sum(axis=1), self._lot_dec[i])
            columns.append((opens.tolist(), highs.tolist(), lows.tolist(), closes.tolist(), vol))
        tf = cfg.history_timeframe_s
        bars: list[Bar] = []
        for b in range(n_bars):
            ts_open = t_begin + b * tf_ns
            for sym, (o, h, lo, c, v) in zip(self.symbols, columns, strict=True):
                bars.append(Bar(sym, ts_open, tf, o[b], h[b], lo[b], c[b], float(v[b]), self.venue))
        self._history = bars

    @staticmethod
    def _jumps(rng: np.random.Generator, spec: SymbolSpec, mask: np.ndarray) -> np.ndarray:
        """Log-return jumps where ``mask`` is set: random sign, log-normal size."""
        out = np.zeros(mask.size)
        n = int(mask.sum())
        if n:
            size = spec.jump_size_bps * 1e-4 * np.exp(JUMP_SIZE_SIGMA * rng.standard_normal(n))
            out[mask] = np.where(rng.random(n) < 0.5, -size, size)
        return out

    # ------------------------------------------------------------------------------- live

    def quotes(self) -> Iterator[Quote]:
        """The endless live stream, non-decreasing in ts_exchange; ts_recv == ts_exchange."""
        if self._end_regime is None:
            self._build_history()
        assert self._end_regime is not None
        return self._stream(_Regime(*self._end_regime))

    def events(self) -> Iterator[Quote]:
        """Same as ``quotes()``: the name shared with the replay sources."""
        return self.quotes()

    def _stream(self, regime: _Regime) -> Iterator[Quote]:
        rng = np.random.default_rng(self._live_seed)
        n_sym = len(self._specs)
        window_ns = max(1, int(CHUNK * self._interval_ns / n_sym))
        lam = window_ns / self._interval_ns
        names = np.array(self.symbols, dtype=object)
        venue = self.venue
        t0 = self.start_ns
        prev_t = t0
        factor_now = 0.0
        log_mid = [math.log(p) for p in self._p0]
        last_t = [t0] * n_sym
        last_factor = [0.0] * n_sym
        sqrt_share = math.sqrt(FACTOR_SHARE)
        sqrt_idio = math.sqrt(1.0 - FACTOR_SHARE)
        while True:
            t1 = t0 + window_ns
            counts = rng.poisson(lam, n_sym)
            ids = np.repeat(np.arange(n_sym), counts)
            times = rng.integers(t0, t1, ids.size, dtype=np.int64)
            order = np.lexsort((ids, times))
            times = times[order]
            ids = ids[order]
            t0 = t1
            n = times.size
            if n == 0:
                continue
            mult = regime.multipliers(rng, times)
            dt = np.diff(times, prepend=prev_t).astype(np.float64)
            prev_t = int(times[-1])
            factor = factor_now + np.cumsum(mult * np.sqrt(dt / YEAR_NS) * rng.standard_normal(n))
            factor_now = float(factor[-1])
            bid = np.empty(n)
            ask = np.empty(n)
            bid_size = np.empty(n)
            ask_size = np.empty(n)
            for i, spec in enumerate(self._specs):
                idx = np.flatnonzero(ids == i)
                m = idx.size
                if m == 0:
                    continue
                ts_i = times[idx]
                dt_i = np.diff(ts_i, prepend=last_t[i]).astype(np.float64)
                last_t[i] = int(ts_i[-1])
                f_i = factor[idx]
                df_i = np.diff(f_i, prepend=last_factor[i])
                last_factor[i] = float(f_i[-1])
                mult_i = mult[idx]
                idio = mult_i * np.sqrt(dt_i / YEAR_NS) * rng.standard_normal(m)
                ret = spec.annual_volatility * (sqrt_share * df_i + sqrt_idio * idio)
                # Jumps cluster with volatility: the rate scales with mult**2, whose long-run
                # mean is 1, so the average rate is still jump_probability.
                jump = rng.random(m) < spec.jump_probability * (mult_i * mult_i)
                ret += self._jumps(rng, spec, jump)
                lm = log_mid[i] + np.cumsum(ret)
                log_mid[i] = float(lm[-1])
                mid = np.exp(lm)
                rel = (
                    spec.spread_bps
                    * 1e-4
                    * (mult_i / _M_CALM)
                    * np.exp(SPREAD_NOISE * rng.standard_normal(m))
                )
                rel[jump] *= JUMP_SPREAD_MULT
                half = mid * np.minimum(rel, MAX_SPREAD_BPS * 1e-4) * 0.5
                tick = spec.tick_size
                b_ticks = np.maximum(np.floor((mid - half) / tick), 1.0)
                a_ticks = np.maximum(np.ceil((mid + half) / tick), b_ticks + 1.0)
                dec = self._tick_dec[i]
                bid[idx] = np.round(b_ticks * tick, dec)
                ask[idx] = np.round(a_ticks * tick, dec)
                lot = spec.lot_size
                thin = spec.typical_size * (_M_CALM / mult_i)
                sizes = thin * np.exp(SIZE_SIGMA * rng.standard_normal((2, m)))
                sizes = np.round(np.maximum(np.rint(sizes / lot), 1.0) * lot, self._lot_dec[i])
                bid_size[idx] = sizes[0]
                ask_size[idx] = sizes[1]
            ts = times.tolist()
            yield from map(
                _make_quote,
                names[ids].tolist(),
                bid.tolist(),
                ask.tolist(),
                bid_size.tolist(),
                ask_size.tolist(),
                ts,
                ts,
                repeat(venue, n),
            )
