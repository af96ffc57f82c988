"""How close paper market orders come to the real book walk, on real Binance BTCUSDT data.

The shared capture (tests/data/hftbacktest, see tests/data/NOTICE.md) has one 1000-level REST
depth snapshot and 5.8 minutes of ``btcusdt@depth@100ms`` diffs. The book is rebuilt with
:class:`~engine.venues.orderbook.BookSync` (snapshot + diffs, Binance's procedure); after every
``--every``-th applied diff it is a sample time. There the *truth* is the VWAP of walking the whole
rebuilt book (up to 1000 levels a side) for a buy and a sell of each size, and each fill model is
asked, through :meth:`PaperBroker.expected_slippage_bps` (the very walk a fill makes), what it
would pay:

* ``old L1``: the L1 quote (the book's top, which is the bookTicker row of the same update id)
  and the previous impact model (5 bps per level of one displayed size);
* ``L2 top N``: the new book walk fed, through :meth:`PaperBroker.on_depth`, what a ccxt
  ``watch_order_book(symbol, N)`` stream gives: the top N levels a side, extrapolated past them.
  N = 20 is ``CcxtMarketFeed``'s default ``book_depth``; N = 1000 is the whole book;
* ``calib L1``: the L1 quote and the impact model with the calibrated defaults of
  :class:`~engine.config.PaperBrokerConfig`.

It prints, per size and side, the median and p90 absolute error against the truth, in bps.
``--calibrate`` grid-searches the L1 model's two parameters on the first half of the samples
(minimising the worst p90 over sizes and sides, then the sum of medians) and prints the best;
the table is always over all samples.

Run: .venv/bin/python bench/fill_model.py [--every N] [--calibrate]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import PaperBrokerConfig
from engine.marketdata.replay import open_data
from engine.paper_broker import PaperBroker
from engine.types import Quote, Side
from engine.venues.orderbook import APPLIED, BookSync

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "hftbacktest"
SNAPSHOT = DATA / "binance_spot_btcusdt_20240808_depth_snapshot.json.xz"
UPDATES = DATA / "binance_spot_btcusdt_20240808_depth_updates.json.xz"
SYMBOL = "BTC/USDT"
SIZES = (0.5, 5.0, 20.0)
FEED_DEPTH = 20  # CcxtMarketFeed's default book_depth
OLD = PaperBrokerConfig(latency_sigma=0.0, impact_bps_per_size=5.0, impact_level_notional=0.0)
CALIBRATED = PaperBrokerConfig(latency_sigma=0.0)

Levels = list[tuple[float, float]]
# ts, quote, full bids, full asks, truth {(size, buy): vwap}
Sample = tuple[int, Quote, Levels, Levels, dict[tuple[float, bool], float]]


def book_walk(levels: Levels, qty: float) -> float | None:
    """VWAP of taking ``qty`` from ``levels`` (best first); None if they hold less."""
    left, cost = qty, 0.0
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            return cost / qty
    return None


def samples(every: int) -> list[Sample]:
    with open_data(SNAPSHOT, "r", encoding="utf-8") as fh:
        snapshot = json.load(fh)
    with open_data(UPDATES, "r", encoding="utf-8") as fh:
        updates = json.load(fh)
    sync = BookSync(SYMBOL)
    out: list[Sample] = []
    applied = 0
    for msg in updates:
        if sync.needs_snapshot:
            sync.on_diff(msg)
            if msg["data"]["u"] >= snapshot["lastUpdateId"] + 1:
                sync.on_snapshot(snapshot)
            continue
        if sync.on_diff(msg) != APPLIED:
            raise SystemExit(f"book sync broke at update {msg['data']['u']}")
        applied += 1
        if applied % every:
            continue
        book = sync.book
        bids, asks = book.bids(), book.asks()
        ts = msg["local_ts_ns"]
        quote = Quote(SYMBOL, bids[0][0], asks[0][0], bids[0][1], asks[0][1], ts, ts, "binance")
        truth = {}
        for qty in SIZES:
            for buy in (True, False):
                vwap = book_walk(asks if buy else bids, qty)
                if vwap is None:
                    raise SystemExit(f"the book holds less than {qty} at {ts}")
                truth[(qty, buy)] = vwap
        out.append((ts, quote, bids, asks, truth))
    return out


def model_vwap(broker: PaperBroker, quote: Quote, qty: float, buy: bool) -> float:
    """The VWAP the broker's walk gives (from its slippage against mid)."""
    side = Side.BUY if buy else Side.SELL
    bps = broker.expected_slippage_bps(side, qty, quote)
    mid = (quote.bid + quote.ask) * 0.5
    return mid * (1 + side.sign * bps * 1e-4)


def errors(
    data: list[Sample], cfg: PaperBrokerConfig, depth: int | None
) -> dict[tuple[float, bool], list[float]]:
    """Absolute error in bps of each model VWAP against the truth, per (size, buy)."""
    broker = PaperBroker(cfg)
    out: dict[tuple[float, bool], list[float]] = {(q, b): [] for q in SIZES for b in (True, False)}
    for ts, quote, bids, asks, truth in data:
        if depth is not None:
            broker.on_depth(SYMBOL, bids[:depth], asks[:depth], ts)
        for (qty, buy), true in truth.items():
            got = model_vwap(broker, quote, qty, buy)
            out[(qty, buy)].append(abs(got - true) / true * 1e4)
    return out


def p90(xs: list[float]) -> float:
    """Nearest-rank 90th percentile (inf, an order the model cannot fill, stays inf)."""
    return sorted(xs)[max(0, math.ceil(0.9 * len(xs)) - 1)]


def calibrate(data: list[Sample]) -> PaperBrokerConfig:
    best: tuple[float, float, PaperBrokerConfig] | None = None
    for bps in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25):
        for notional in (50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 400e3):
            cfg = CALIBRATED.model_copy(
                update={"impact_bps_per_size": bps, "impact_level_notional": notional}
            )
            errs = errors(data, cfg, None)
            worst = max(p90(e) for e in errs.values())
            medians = sum(statistics.median(e) for e in errs.values())
            print(f"  {bps:5.2f} bps {notional:9,.0f}  worst p90 {worst:6.2f}  med {medians:.2f}")
            if best is None or (worst, medians) < best[:2]:
                best = (worst, medians, cfg)
    assert best is not None
    return best[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="sample every Nth applied diff")
    ap.add_argument("--calibrate", action="store_true", help="grid-search the L1 model first")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = samples(max(1, args.every))
    print(f"{len(data)} sample times from {SNAPSHOT.name} + {UPDATES.name}")
    calibrated = CALIBRATED
    if args.calibrate:
        print("calibrating the L1 model on the first half of the samples:")
        calibrated = calibrate(data[: len(data) // 2])
        print(
            f"best: impact_bps_per_size = {calibrated.impact_bps_per_size:g}, "
            f"impact_level_notional = {calibrated.impact_level_notional:g}"
        )
    models: list[tuple[str, PaperBrokerConfig, int | None]] = [
        ("old L1", OLD, None),
        (f"L2 top {FEED_DEPTH}", CALIBRATED, FEED_DEPTH),
        ("L2 top 1000", CALIBRATED, 1000),
        ("calib L1", calibrated, None),
    ]
    results = [(name, errors(data, cfg, depth)) for name, cfg, depth in models]
    print("absolute error of the VWAP against the full-book walk, bps (median / p90)")
    print(f"{'size':>6} {'side':>4}" + "".join(f" {name:>17}" for name, _ in results))
    for qty in SIZES:
        for buy in (True, False):
            row = f"{qty:>6g} {'buy' if buy else 'sell':>4}"
            for _, errs in results:
                e = errs[(qty, buy)]
                row += f" {statistics.median(e):8.2f}/{p90(e):8.2f}"
            print(row)
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
