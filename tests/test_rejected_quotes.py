"""A quote the validator rejects reaches nothing: not the marks, the strategies, the bars, the
paper broker's fill model or the chart; and a journal holding an impossible number is refused.

The replays are the real Binance bookTicker recording with bad rows put exactly where a clean
run filled (where an order was waiting). A bad row must change nothing: the fills are those of
the same file with the bad rows simply deleted, in the live engine and in the backtest.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backtest import BacktestOptions, load_market_data, run_backtest_core
from engine.journal import (
    GENESIS_HASH,
    Journal,
    read_rows,
    row_hash,
    verify_journal,
    write_anchor,
)
from engine.restore import RestoreError, restore_state
from engine.runtime import Engine
from engine.types import NS_PER_MS, Fill, Quote
from tests.conftest import BARS_CSV, BOOKTICKER_CSV, fast_config
from tests.test_backtest_equivalence import EMA, RSI, paper_trade, replay_config

REPO = Path(__file__).resolve().parent.parent
# Where the property's engines keep their journals: memory-backed if the system has it.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
QUOTE_EXAMPLES = int(os.environ.get("COCKPIT_REJECTED_QUOTE_EXAMPLES", "30"))


# ---------------------------------------------------------------- helpers


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _variants(tmp: Path, at: set[int], bad: dict[int, str]) -> tuple[Path, Path]:
    """The recording with the rows at timestamps ``at`` made bad (column -> text), and the
    recording with those rows deleted."""
    header, *body = _rows(BOOKTICKER_CSV)
    spoiled, dropped = [header], [header]
    hits = 0
    for row in body:
        if int(row[0]) in at:
            hits += 1
            spoiled.append([bad.get(i, v) for i, v in enumerate(row)])
        else:
            spoiled.append(row)
            dropped.append(row)
    assert hits >= len(at)
    return _write(tmp / "spoiled.csv", spoiled), _write(tmp / "dropped.csv", dropped)


def _fill_places() -> set[int]:
    """Where a clean run fills: the quotes its waiting orders executed against."""
    cfg = replay_config(Path("unused"), "quotes", BOOKTICKER_CSV, [EMA, RSI])
    clean = run_backtest_core(cfg, load_market_data(BOOKTICKER_CSV), BacktestOptions(fill="live"))
    assert len(clean.fills) >= 15
    return {f.ts for f in clean.fills}


def _valid_envelope(path: Path) -> tuple[float, float]:
    """The lowest bid and highest ask among the rows a validator would accept."""
    bids, asks = [], []
    for row in _rows(path)[1:]:
        bid, ask = float(row[2]), float(row[4])
        if math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask:
            bids.append(bid)
            asks.append(ask)
    return min(bids), max(asks)


# Crossed as in the report (bid 61900 above ask 61000, ask ~840 below the market), a NaN ask,
# and a NaN book.
SPOILERS = {
    "crossed": {2: "61900", 4: "61000"},
    "nan_ask": {4: "nan"},
    "nan_book": {2: "nan", 4: "nan"},
}


@pytest.mark.parametrize("spoiler", sorted(SPOILERS))
async def test_bad_quotes_where_orders_wait_change_no_fill(tmp_path: Path, spoiler: str) -> None:
    """Engine and backtest on the spoiled file fill exactly as on the file without those rows;
    every fill is finite and inside the valid book; the engine restarts from its journal."""
    places = _fill_places()
    spoiled, dropped = _variants(tmp_path, places, SPOILERS[spoiler])
    data_dir = tmp_path / "engine"
    cfg = replay_config(data_dir, "quotes", spoiled, [EMA, RSI])
    live = await paper_trade(cfg, data_dir)

    reference = run_backtest_core(
        replay_config(tmp_path / "ref", "quotes", dropped, [EMA, RSI]),
        load_market_data(dropped),
        BacktestOptions(fill="live"),
    )
    backtest = run_backtest_core(cfg, load_market_data(spoiled), BacktestOptions(fill="live"))
    assert len(reference.fills) >= 15
    assert live == reference.fills
    assert backtest.fills == reference.fills
    assert sum(backtest.rejected.values()) >= len(reference.fills) - 2

    # A paper fill is stamped with the quote it executed against: never a spoiled one.
    assert all(math.isfinite(f.price) and f.price > 0 and f.ts not in places for f in live)

    # The journal restores cleanly, and a second session starts on it.
    restored = restore_state(data_dir / "journal.sqlite")
    assert restored.fills == live
    engine = Engine(cfg, data_dir)
    await engine.start()
    try:
        assert engine.core is not None
        assert engine.core.counters["fills"] == 0
        assert engine.restored.fills == live
    finally:
        await engine.stop()


async def test_rejected_quotes_are_reported_but_never_marked_or_shown(tmp_path: Path) -> None:
    """The reject shows as a counted report; marks, the quote board and the chart (equity
    curve) only ever carry valid prices."""
    places = _fill_places()
    spoiled, _ = _variants(tmp_path, places, SPOILERS["crossed"])
    data_dir = tmp_path / "engine"
    engine = Engine(replay_config(data_dir, "quotes", spoiled, [EMA, RSI]), data_dir)
    await engine.start()
    low, high = _valid_envelope(spoiled)
    seen: list[dict[str, Any]] = []
    try:
        stream = engine.subscribe_dicts()
        await engine.run()
        while not stream.empty():
            seen.append(stream.get_nowait())
        snap = engine.snapshot()
    finally:
        await engine.stop()
    rejects = [e for e in seen if e["event"] == "quotes_rejected"]
    assert rejects and rejects[0]["code"] == "crossed_book"
    assert snap["counters"]["quotes_rejected"]["crossed_book"] >= 15
    q = snap["quotes"]["BTC/USDT"]
    assert low <= q["bid"] <= q["ask"] <= high
    marks = [m for e in seen if e["event"] == "marks" for m in e["marks"].values()]
    assert marks and all(low <= m <= high for m in marks)
    fills = [e["fill"] for e in seen if e["event"] == "fill"]
    assert fills and not any(f["ts"] in places for f in fills)


BAR_EMA = dict(EMA, timeframe_s=60, params={"fast": 5, "slow": 20})


def _bars_variants(tmp: Path, n: int) -> tuple[Path, Path, set[int]]:
    """The first ``n`` real 1-minute bars with every bar a clean next-open run filled in
    replaced by a bad one (high below an open far off), and the same bars with those deleted."""
    header, *body = _rows(BARS_CSV)
    body = body[:n]
    clean = _write(tmp / "clean.csv", [header, *body])
    data = load_market_data(clean)
    cfg = replay_config(tmp / "x", "bars", clean, [BAR_EMA])
    result = run_backtest_core(cfg, data, BacktestOptions(fill="next-open"))
    assert len(result.fills) >= 20
    minute = 60 * 1_000_000_000
    bad_at = {t for t in data.ts if any(t <= f.ts < t + minute for f in result.fills)}
    spoiled, dropped = [header], [header]
    for t, row in zip(data.ts, body, strict=True):
        if t in bad_at:  # an order waited for this bar's open
            o = float(row[1])
            spoiled.append([row[0], f"{o * 0.5}", f"{o * 0.4}", *row[3:]])
        else:
            spoiled.append(row)
            dropped.append(row)
    return _write(tmp / "spoiled.csv", spoiled), _write(tmp / "dropped.csv", dropped), bad_at


def test_rejected_bars_reach_no_fill_model(tmp_path: Path) -> None:
    """Next-open fills never take the open of a bar the validator rejected: the orders wait
    for the next valid bar, exactly as if the bad bars were not in the file."""
    spoiled, dropped, bad_at = _bars_variants(tmp_path, 3000)
    opts = BacktestOptions(fill="next-open")
    cfg = replay_config(tmp_path / "a", "bars", spoiled, [BAR_EMA])
    got = run_backtest_core(cfg, load_market_data(spoiled), opts)
    want = run_backtest_core(cfg, load_market_data(dropped), opts)
    assert len(want.fills) >= 20
    assert got.fills == want.fills
    minute = 60 * 1_000_000_000
    assert not any(t <= f.ts < t + minute for f in got.fills for t in bad_at)


# ---------------------------------------------------------------- restore refuses bad numbers


def _fill_payload(fill: Fill, **override: Any) -> dict[str, Any]:
    d = fill.to_dict()
    d.update(override)
    return {"fill": d, "realized_pnl": 0.0, "position_qty": d["qty"]}


@pytest.fixture(scope="module")
def traded_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real paper session (simulated market) with fills, stopped cleanly; copy before use."""
    data_dir = tmp_path_factory.mktemp("traded")

    async def trade() -> None:
        engine = Engine(fast_config(data_dir), data_dir)
        await engine.start()
        try:
            await engine.run(max_events=40_000)
        finally:
            await engine.stop()

    asyncio.run(trade())
    assert any(True for _ in read_rows(data_dir / "journal.sqlite", {"fill"}))
    return data_dir


def _copy(src: Path, tmp: Path) -> tuple[Path, list[Fill]]:
    data_dir = tmp / "data"
    shutil.copytree(src, data_dir)
    journal = data_dir / "journal.sqlite"
    return journal, [Fill.from_dict(r.payload["fill"]) for r in read_rows(journal, {"fill"})]


async def _append(path: Path, kind: str, ts: int, payload: dict[str, Any]) -> int:
    journal = await Journal.open(path)
    try:
        return await journal.append_durable(kind, ts, payload)
    finally:
        await journal.close()


def _rehash_with(path: Path, seq: int, payload_json: str) -> None:
    """Put ``payload_json`` in row ``seq`` and re-hash the chain from there, anchor included
    (so the chain is intact and only the content is impossible, e.g. a NaN no writer can
    produce: what the content checks must catch on their own)."""
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT seq, ts, kind, payload FROM journal WHERE seq >= ? ORDER BY seq", (seq,)
    ).fetchall()
    prev = conn.execute("SELECT hash FROM journal WHERE seq = ?", (seq - 1,)).fetchone()
    prev_hash = prev[0] if prev else GENESIS_HASH
    for s, ts, kind, payload in rows:
        if s == seq:
            payload = payload_json
        digest = row_hash(s, ts, kind, payload, prev_hash)
        conn.execute(
            "UPDATE journal SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (payload, prev_hash, digest, s),
        )
        prev_hash = digest
    conn.commit()
    conn.close()
    if rows:
        write_anchor(path, rows[-1][0], prev_hash)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("price", None, "price"),  # how a NaN fill price was journaled (payloads map NaN to null)
        ("price", "NaN", "price"),  # a NaN literal: only an edit can put it there
        ("price", -61000.0, "price"),
        ("price", 0.0, "price"),
        ("qty", "0.05", "qty"),
        ("fee", None, "fee"),
        # Finite but beyond any amount: equity went to -inf and stdout printed -Infinity.
        ("price", 1e308, "price"),
        ("fee", -1e12, "fee"),  # a fee worth more than the fill
    ],
)
async def test_cli_engine_refuses_a_journal_with_an_impossible_fill(
    traded_journal: Path, tmp_path: Path, field: str, value: Any, says: str
) -> None:
    """One line naming the row and the field, exit 1, no traceback; nothing is written."""
    journal, fills = _copy(traded_journal, tmp_path)
    data_dir = journal.parent
    last = fills[-1]
    if value == "NaN":
        bad = _fill_payload(last, fill_id=last.fill_id + "-x")
        seq = await _append(journal, "fill", last.ts, bad)
        text = json.dumps(bad, sort_keys=True, separators=(",", ":"))
        _rehash_with(journal, seq, text.replace(f'"price":{json.dumps(last.price)}', '"price":NaN'))
    else:
        bad = _fill_payload(last, fill_id=last.fill_id + "-x", **{field: value})
        seq = await _append(journal, "fill", last.ts, bad)
    assert verify_journal(journal).ok  # the chain is intact: the content is what is wrong
    rows_before = sum(1 for _ in read_rows(journal))

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data_dir), "--for", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"row {seq} (fill)" in lines[0] and says in lines[0]
    assert "unexpected error" not in lines[0]
    assert sum(1 for _ in read_rows(journal)) == rows_before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_restore_refuses_non_finite_literals_in_an_intact_chain(
    traded_journal: Path, tmp_path: Path, literal: str
) -> None:
    """A NaN no writer can produce (JSON refuses it) but an edited file can: refused by row."""
    journal, _ = _copy(traded_journal, tmp_path)
    (seq, payload), *_ = [(r.seq, r.payload) for r in read_rows(journal, {"fill"})]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    price = payload["fill"]["price"]
    text = text.replace(f'"price":{json.dumps(price)}', f'"price":{literal}')
    assert literal in text
    _rehash_with(journal, seq, text)
    assert verify_journal(journal).ok
    with pytest.raises(RestoreError) as err:
        restore_state(journal)
    assert f"row {seq} (fill)" in str(err.value) and "price" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["order", "marks", "session"])
async def test_restore_refuses_impossible_orders_marks_and_cash(
    traded_journal: Path, tmp_path: Path, kind: str
) -> None:
    journal, _ = _copy(traded_journal, tmp_path)
    row = next(r for r in read_rows(journal, {kind}))
    bad = dict(row.payload)
    if kind == "order":
        bad["order"] = dict(bad["order"], filled_qty=-1.0)
        says = "filled_qty"
    elif kind == "marks":
        bad["marks"] = {sym: None for sym in bad["marks"]}
        says = "mark of"
    else:
        bad["info"] = dict(bad["info"], starting_cash=0)
        says = "starting_cash"
    # Appended last so it is the row restore trusts (a first session row sets the cash).
    if kind == "session":
        _rehash_with(journal, row.seq, json.dumps(bad, sort_keys=True, separators=(",", ":")))
        seq = row.seq
    else:
        seq = await _append(journal, kind, row.ts + 1, bad)
    with pytest.raises(RestoreError, match=rf"row {seq} \({kind}\): .*{says}"):
        restore_state(journal)


# ---------------------------------------------------------------- the property


T0 = 1_709_251_200 * 1_000_000_000  # 2024-03-01T00:00:00Z


@st.composite
def quote_streams(draw: st.DrawFn) -> tuple[list[Quote], list[Quote]]:
    """A random-walk stream of valid quotes with arbitrary invalid ones interleaved; returns
    (the whole stream, its valid quotes)."""
    n = draw(st.integers(200, 600))
    steps = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    spreads = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(20, 400), min_size=n, max_size=n))
    # Values that make a quote invalid whatever the market and whatever else is wrong with it.
    bad_value = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0])
    # Bad quotes from a drawn point on (so they also meet orders in flight, not only the
    # quiet start), before about every other valid quote.
    bad_from = draw(st.integers(0, n - 1))
    flags = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    bad_at = {i for i in range(bad_from, n) if flags[i]}
    stream: list[Quote] = []
    valid: list[Quote] = []
    mid = 60_000.0
    t = T0
    for i in range(n):
        mid += steps[i] * 5.0
        t += gaps[i] * NS_PER_MS
        half = spreads[i] * 0.5
        q = Quote("BTC/USDT", mid - half, mid + half, 1.0, 1.0, t, t, "sim")
        if i in bad_at:
            kind = draw(st.sampled_from(["crossed", "field", "absurd", "backwards", "wide"]))
            if kind == "backwards" and not valid:
                kind = "crossed"  # nothing accepted yet: an early time is not backwards
            if kind == "crossed":
                bad = Quote("BTC/USDT", mid + 400.0, mid - 400.0, 1.0, 1.0, t, t, "sim")
            elif kind == "field":
                values = [q.bid, q.ask, q.bid_size, q.ask_size]
                for w in draw(st.sets(st.integers(0, 3), min_size=1)):
                    values[w] = draw(bad_value)
                bad = Quote("BTC/USDT", *values, t, t, "sim")
            elif kind == "absurd":  # one side absurdly far off: crossed, or a spread of ~100%
                side = draw(st.sampled_from([0, 1]))
                values = [q.bid, q.ask, q.bid_size, q.ask_size]
                values[side] = draw(st.sampled_from([1e-300, 1e300]))
                bad = Quote("BTC/USDT", *values, t, t, "sim")
            elif kind == "backwards":
                back = valid[-1].ts_exchange - draw(st.integers(1, 10_000)) * NS_PER_MS
                bad = Quote("BTC/USDT", mid - 900.0, mid - 899.0, 1.0, 1.0, back, back, "sim")
            else:
                bad = Quote("BTC/USDT", mid * 0.5, mid * 1.5, 1.0, 1.0, t, t, "sim")
            stream.append(bad)
            if draw(st.booleans()):
                continue  # the bad quote replaces the good one
        stream.append(q)
        valid.append(q)
    return stream, valid


@settings(
    max_examples=QUOTE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=quote_streams())
def test_fills_stay_inside_the_valid_book_whatever_is_interleaved(
    data: tuple[list[Quote], list[Quote]],
) -> None:
    """Every fill (live engine path: validator, core, paper broker) is finite, positive and
    inside the bid/ask envelope of the valid quotes, and equals the run on the valid ones."""
    stream, valid = data
    fast = dict(EMA, timeframe_s=1, params={"fast": 2, "slow": 3}, allow_short=True)

    async def fills_of(events: list[Quote]) -> list[Any]:
        # The journal on memory where there is one (as the safety state machine's): each
        # example starts two engines, and waiting on their fsyncs on disk was half its time.
        with tempfile.TemporaryDirectory(prefix="rejected-", dir=SCRATCH) as scratch:
            data_dir = Path(scratch) / "prop"
            cfg = fast_config(
                data_dir, strategies=[fast], market={"simulated": {"history_bars": 20}}
            )
            engine = Engine(cfg, data_dir)
            await engine.start()
            got: list[Any] = []
            queue = engine.subscribe()
            try:
                for i in range(0, len(events), 64):
                    await engine.process(events[i : i + 64])
            finally:
                await engine.stop()
        while not queue.empty():
            ev = queue.get_nowait()
            if ev.kind == "fill":
                got.append(ev.fill)
        return got

    got = asyncio.run(fills_of(stream))
    low = min(q.bid for q in valid)
    high = max(q.ask for q in valid)
    for f in got:
        assert math.isfinite(f.price) and f.price > 0
        assert low <= f.price <= high
    assert got == asyncio.run(fills_of(valid))
