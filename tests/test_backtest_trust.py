"""Backtests that were silently wrong (issue 11, items 9 and 12), pinned on the real bars.

Each malformed file is built from the shipped nautilus 1-minute BTC bars. A row the boundary
rejects must change nothing but the count: a run over a file with bad rows must equal the run
over the same file with those rows deleted, and the report must say how many and why.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import engine.backtest as bt
from cockpit.backtest_report import render_text
from engine.backtest import (
    BacktestOptions,
    BacktestResult,
    load_market_data,
    run_backtest,
)
from engine.config import Config, load_config
from engine.marketdata.replay import ReplayError, parse_timestamp_ns
from tests.conftest import BARS_CSV
from tests.test_backtest import cli

HEADER = "timestamp,open,high,low,close,volume"
ROWS = BARS_CSV.read_text().splitlines()[1:]
FAST = {"strategy": "ema_cross", "params": {"fast": 3, "slow": 8}, "qty": 0.01, "breakers": False}


def base() -> Config:
    return load_config()


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def run(path: Path, unit: str | None = None, **over: Any) -> BacktestResult:
    opts = BacktestOptions(**{**FAST, **over})
    told = {"volume_unit": unit} if unit else {}
    return run_backtest(base(), load_market_data(path, **told), opts)


def outcome(r: BacktestResult) -> tuple[Any, ...]:
    """What a person reads off a run: its fills, trades and final money."""
    fills = [(f.side, f.qty, f.price, f.ts) for f in r.fills]
    return fills, r.metrics.trades, r.final_portfolio


def with_prices(row: str, price: float) -> str:
    t, *_rest, vol = row.split(",")
    return ",".join([t, *[repr(price)] * 4, vol])


# ------------------------------------------------------------------ duplicates


def test_duplicate_rows_run_once_and_are_counted(tmp_path: Path) -> None:
    """600 bars with every row twice ran as 1,200 bars (more trades, exit 0)."""
    rows = ROWS[:600]
    clean = run(write_csv(tmp_path / "clean.csv", rows))
    doubled = run(write_csv(tmp_path / "dup.csv", [r for r in rows for _ in (0, 1)]))
    assert clean.metrics.trades > 10
    assert outcome(doubled) == outcome(clean)
    assert doubled.rejected == {"duplicate_timestamp": 600}
    assert doubled.header["rows"] == {
        "read": 1200,
        "accepted": 600,
        "rejected": 600,
        "rejected_by_code": {"duplicate_timestamp": 600},
    }
    text = render_text(doubled)
    assert "600 of 1,200 rows rejected at the boundary" in text
    assert "duplicate_timestamp 600" in text


# ------------------------------------------------------------------ absurd prices


@pytest.mark.parametrize("fill", ["live", "close", "next-open"])
@pytest.mark.parametrize(("price", "code"), [(1e308, "absurd_price"), (1e9, "price_jump")])
def test_absurd_bars_change_nothing_but_the_count(
    tmp_path: Path, fill: str, price: float, code: str
) -> None:
    """Ten bars at 1e308 gave a final equity of -1e301 with exit 0. Put them exactly where the
    clean run filled (where an order waits for the bar) and the run must equal the one over
    the file without those rows."""
    rows = ROWS[:1500]
    clean = run(write_csv(tmp_path / "clean.csv", rows), fill=fill)
    fill_ts = sorted({f.ts for f in clean.fills})
    bar_ts = [parse_timestamp_ns(r.split(",")[0]) for r in rows]
    # the bar each fill happened on (next-open: its open; live/close: the bar that closed)
    where = sorted({max(i for i, t in enumerate(bar_ts) if t <= ts) for ts in fill_ts})
    bad = [i for i in where if i > 10][:10]
    assert len(bad) == 10
    corrupted = [with_prices(r, price) if i in bad else r for i, r in enumerate(rows)]
    dirty = run(write_csv(tmp_path / "dirty.csv", corrupted), fill=fill)
    without = run(
        write_csv(tmp_path / "without.csv", [r for i, r in enumerate(rows) if i not in bad]),
        fill=fill,
    )
    assert dirty.rejected == {code: 10}
    assert outcome(dirty) == outcome(without)
    assert all(f.price < 1e6 for f in dirty.fills)
    assert abs(dirty.final_portfolio["equity"] - 100_000) < 1_000


def test_every_row_rejected_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "nan.csv", [with_prices(r, float("nan")) for r in ROWS[:300]])
    with pytest.raises(bt.BacktestError, match=r"all 300 bars .* rejected .*not_finite 300") as exc:
        run(path)
    assert type(exc.value).__name__ == "NoUsableDataError"
    assert cli("--data", str(path), "--strategy", "ema_cross", "--no-chart") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nothing to backtest" in err and "Traceback" not in err


# ------------------------------------------------------------------ volume units


def ccxt_rows(rows: list[str]) -> list[list[float]]:
    """The same bars as ccxt fetch_ohlcv gives them: epoch ms and volume in the base currency."""
    out = []
    for r in rows:
        t, o, h, lo, c, quote_volume = r.split(",")
        ms = parse_timestamp_ns(t) // 1_000_000
        out.append([ms, float(o), float(h), float(lo), float(c), float(quote_volume) / float(c)])
    return out


def test_ccxt_json_volume_is_base_and_trades_as_the_csv(tmp_path: Path) -> None:
    """ccxt OHLCV volume is in the base currency: read as quote volume, every bar looked ~50,000
    times thinner, orders were cut to dust (0 round trips, BELOW_MIN_QTY denials) where the same
    bars as a CSV with quote volume traded normally."""
    rows = ROWS[:3000]
    csv_run = run(write_csv(tmp_path / "bars.csv", rows), qty=None, fraction=0.02)
    path = tmp_path / "bars.json"
    path.write_text(json.dumps(ccxt_rows(rows)))
    json_run = run(path, qty=None, fraction=0.02)
    assert csv_run.metrics.trades > 20
    assert json_run.metrics.trades == csv_run.metrics.trades
    # Identical decisions either way; none cut below the venue minimum. (An exit signalled while
    # its entry is still on its way sizes to zero: SIZE_ZERO, the same in both runs.)
    assert json_run.denied == csv_run.denied
    assert not {"BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL"} & set(json_run.denied)
    assert json_run.header["volume"]["unit"] == "base"
    assert json_run.header["volume"]["unit_from"] == "default for ccxt json"
    assert csv_run.header["volume"]["unit"] == "quote"
    assert json_run.header["volume"]["capped_fills"] == 0


def test_volume_capped_fills_are_reported(tmp_path: Path) -> None:
    """Told the wrong unit, the fill model caps every order at the bar's volume: the report
    says so, with the count of those fills and what the fill model does with them."""
    path = tmp_path / "bars.json"
    path.write_text(json.dumps(ccxt_rows(ROWS[:3000])))
    told = run(path, qty=None, fraction=0.02, unit="quote")
    vol = told.header["volume"]
    assert vol["unit"] == "quote" and vol["unit_from"] == "--volume-unit"
    assert vol["capped_orders"] > 0 and vol["capped_fills"] == len(told.fills) > 0
    text = render_text(told)
    assert f"{vol['capped_fills']} of {len(told.fills)} fills" in text
    assert "impact levels" in text and "--volume-unit" in text


def test_volume_unit_on_quotes_is_refused() -> None:
    from tests.conftest import BOOKTICKER_CSV

    with pytest.raises(bt.BacktestError, match="--volume-unit is for bar data"):
        load_market_data(BOOKTICKER_CSV, volume_unit="base")


# ------------------------------------------------------------------ size limit


def peak_while(fn: Any) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        try:
            result: Any = fn()
        except ReplayError as exc:
            result = exc
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_file_over_the_row_limit_is_refused_early_in_bounded_memory(
    tmp_path: Path, fmt: str
) -> None:
    """A 1 GB file was read whole (2.1 GB RSS) before it was refused. Scaled down: 60,000
    rows against a limit of 1,000. The limit holds exactly (1,000 rows load), one more row
    is refused with one line, and refusing costs memory for the limit, not for the file."""
    many = (ROWS * 2)[:60_000]
    t0 = parse_timestamp_ns(ROWS[0].split(",")[0])
    rows = [
        ",".join([str(t0 // 1_000_000 + i * 60_000), *r.split(",")[1:]]) for i, r in enumerate(many)
    ]

    def write(path: Path, n: int) -> Path:
        if fmt == "csv":
            return write_csv(path, rows[:n])
        path.write_text(json.dumps({"ohlcv": ccxt_rows(rows[:n]), "symbol": "BTC/USDT"}))
        return path

    at = write(tmp_path / f"at.{fmt}", 1000)
    assert len(load_market_data(at, max_rows=1000)) == 1000
    over = write(tmp_path / f"over.{fmt}", 1001)
    with pytest.raises(ReplayError, match="more than 1,000 data rows") as exc:
        load_market_data(over, max_rows=1000)
    assert "\n" not in str(exc.value) and "--max-rows" in str(exc.value)

    big = write(tmp_path / f"big.{fmt}", len(rows))
    assert big.stat().st_size > 3_000_000
    peak_refused, err = peak_while(lambda: load_market_data(big, max_rows=1000))
    assert isinstance(err, ReplayError) and "\n" not in str(err)
    assert "far over the 1,000 data rows held in memory" in str(err)  # refused before parsing
    # between the limit and twice it, the limit is kept while streaming
    near = write(tmp_path / f"near.{fmt}", 1900)
    with pytest.raises(ReplayError, match="more than 1,000 data rows"):
        load_market_data(near, max_rows=1000)
    peak_whole, data = peak_while(lambda: load_market_data(big))
    assert len(data) == 60_000
    # refusing holds about the limit's rows and a read buffer; reading all holds every row
    assert peak_refused < 3_000_000 < peak_whole
    assert peak_refused * 4 < peak_whole


def test_cli_max_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "b.csv", ROWS[:101])
    assert cli("--data", str(path), "--strategy", "ema_cross", "--max-rows", "100") == 2
    err = capsys.readouterr().err.strip()
    assert "more than 100 data rows" in err and "\n" not in err


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_json_streaming_reads_any_chunking_as_json_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(bt.data, "_JSON_CHUNK", chunk)
    rows = ccxt_rows(ROWS[:40])
    path = tmp_path / "o.json"
    path.write_text(
        '\ufeff {"note": {"a": [1, 2, "]"]},\n "ohlcv": '
        + json.dumps(rows, indent=1)
        + ',\n "symbol": "ETH/USDT"}\n'
    )
    data = load_market_data(path, volume_unit="quote")
    assert data.symbol == "ETH/USDT"
    assert data.ts == [r[0] * 1_000_000 for r in rows]
    assert [list(c) for c in data.cols] == [[r[j] for r in rows] for j in range(1, 6)]
    broken = tmp_path / "broken.json"
    broken.write_text("[\n" + json.dumps(rows[0]) + ",\n" + json.dumps(rows[1])[:-3] + "\n")
    with pytest.raises(ReplayError, match=r"line [34] column \d+: not valid JSON"):
        load_market_data(broken)


# ------------------------------------------------------------------ what was on and off


def test_report_lists_every_breaker_limit_and_the_approvals_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report said "breakers ON" while the backtest turned unreviewed_fills off and forced
    approvals to auto."""
    path = write_csv(tmp_path / "b.csv", ROWS[:300])
    assert cli("--data", str(path), "--strategy", "ema_cross", "--json", "--no-chart") == 0
    safety = json.loads(capsys.readouterr().out)["header"]["safety"]
    by_name = {(b["breaker"], b["scope"]): b for b in safety["breakers"]}
    assert set(by_name) == {
        ("consecutive_losses", "strategy"),
        ("consecutive_losses", "global"),
        ("rolling_loss", "strategy"),
        ("rolling_loss", "global"),
        ("orders_per_minute", "strategy"),
        ("signal_rate", "strategy"),
        ("consecutive_rejects", "strategy"),
        ("slippage", "strategy"),
        ("stale_feed", "symbol"),
        ("clock_drift", "global"),
        ("unreviewed_fills", "strategy"),
    }
    assert by_name[("unreviewed_fills", "strategy")]["state"] == "off"
    assert "nobody reviews" in by_name[("unreviewed_fills", "strategy")]["note"]
    assert by_name[("clock_drift", "global")]["state"] == "off"
    assert by_name[("consecutive_losses", "strategy")] == {
        "breaker": "consecutive_losses",
        "scope": "strategy",
        "state": "on",
        "limit": "12 losing trades in a row",  # config/default.toml's
        "action": "pause_strategy",
        "note": "",
    }
    assert safety["approvals"].startswith("auto for every order")
    assert safety["limits"]["state"] == "on"
    assert safety["limits"]["max_order_notional"] == "10,000.00 USDT"
    assert safety["kill_switch"]["daily_loss_limit_pct"] == 5.0

    assert cli("--data", str(path), "--strategy", "ema_cross", "--no-chart") == 0
    text = capsys.readouterr().out
    assert "breakers ON" not in text
    assert "breakers   on (9" in text and "off (2)" in text
    assert "unreviewed_fills (strategy): off (nobody reviews fills in a backtest)" in text
    assert "consecutive_losses (strategy): 12 losing trades in a row -> pause_strategy" in text
    assert "approvals  auto for every order (forced: nobody approves in a backtest)" in text
    assert "kill       daily loss 5%, drawdown 15% -> halt" in text

    assert (
        cli(
            "--data",
            str(path),
            "--strategy",
            "ema_cross",
            "--no-chart",
            "--no-breakers",
            "--no-limits",
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "off (11)" in text and "breakers   on" not in text
    assert "12 losing trades in a row: off (--no-breakers)" in text
    assert "lifted to their most permissive (--no-limits)" in text


# ------------------------------------------------------------------ compressed files


@pytest.mark.parametrize("suffix", [".xz", ".gz", ".bz2"])
def test_a_compressed_file_reads_as_its_plain_copy(tmp_path: Path, suffix: str) -> None:
    """Recorded data kept compressed (the shipped sample is .xz) gives the very same run."""
    import bz2
    import gzip
    import lzma

    packer = {".xz": lzma.compress, ".gz": gzip.compress, ".bz2": bz2.compress}[suffix]
    plain = write_csv(tmp_path / "bars.csv", ROWS[:800])
    packed = tmp_path / f"bars.csv{suffix}"
    packed.write_bytes(packer(plain.read_bytes()))
    assert outcome(run(packed)) == outcome(run(plain))
    doc = tmp_path / f"bars.json{suffix}"
    doc.write_bytes(packer(json.dumps(ccxt_rows(ROWS[:800])).encode()))
    assert load_market_data(doc).fmt == "ccxt json"


def test_a_damaged_compressed_file_is_one_line(tmp_path: Path) -> None:
    import lzma

    from tests.test_cli import run as run_cli

    whole = lzma.compress(write_csv(tmp_path / "b.csv", ROWS[:2000]).read_bytes())
    for name, body in (("garbage.csv.xz", b"not xz at all"), ("cut.csv.xz", whole[:-200])):
        path = tmp_path / name
        path.write_bytes(body)
        proc = run_cli("backtest", "--data", str(path), "--strategy", "ema_cross")
        assert proc.returncode in (1, 2), proc
        assert "Traceback" not in proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and name in err[0], err


@pytest.mark.parametrize(
    "doc",
    ["[" * 100_000 + "]" * 100_000, '{"ohlcv":' + "[" * 50_000 + "]" * 50_000 + "}"],
    ids=["array", "ohlcv-key"],
)
def test_deeply_nested_json_is_one_line(tmp_path: Path, doc: str) -> None:
    """Nesting past the parser's recursion limit was 'unexpected error: RecursionError'."""
    from tests.test_cli import run as run_cli

    path = tmp_path / "deep.json"
    path.write_text(doc)
    proc = run_cli("backtest", "--data", str(path), "--strategy", "ema_cross")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nested too deeply" in proc.stderr and "unexpected" not in proc.stderr


def test_a_number_too_long_to_read_is_one_line(tmp_path: Path) -> None:
    """A 5,000-digit price was 'unexpected error: ValueError: Exceeds the limit (4300 digits)'."""
    from tests.test_cli import run as run_cli

    path = tmp_path / "long.json"
    path.write_text("[[1640995200000," + "9" * 5000 + ",1,1,1,1]]")
    proc = run_cli("backtest", "--data", str(path), "--strategy", "ema_cross")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "number too long" in proc.stderr and "unexpected" not in proc.stderr
