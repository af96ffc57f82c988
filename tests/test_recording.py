"""Raw market data recording (engine.marketdata.recording): the SHA-256 chain, day files made
read-only when their day closes, `cockpit data verify` naming what was changed, dropped,
inserted or reordered, and a recording replaying to the live run's quotes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.marketdata.recording import (
    Item,
    MarketRecorder,
    RecordWriter,
    read_recording,
    verify_file,
)
from engine.marketdata.replay import ReplayError
from engine.types import NS_PER_SECOND

DAY1 = 1_735_689_600 * NS_PER_SECOND  # 2025-01-01T00:00:00Z
DAY2 = DAY1 + 86_400 * NS_PER_SECOND
EXAMPLES = int(os.environ.get("COCKPIT_RECORD_EXAMPLES", "60"))


def book_payload(i: int) -> bytes:
    bid = 61000.0 + i % 7
    return (
        f'{{"symbol":"BTC/USDT","timestamp":{DAY1 // 1_000_000 + i},'
        f'"bids":[[{bid},1.5],[{bid - 1},2.0]],"asks":[[{bid + 1},1.0],[{bid + 2},3.0]]}}'
    ).encode()


def write_day(root: Path, n: int, *, close: bool = True) -> Path:
    """``n`` book payloads on 2025-01-01, the day closed (a record of the next day arrives)."""
    w = RecordWriter(root, clock_ns=lambda: DAY2 if close else DAY1 + 3_600 * NS_PER_SECOND)
    inst = {"tick_size": 0.01, "lot_size": 0.000001, "min_qty": 0.000048, "min_notional": 1.0}
    w.describe("bybit", "BTC/USDT", source="book", stale_after_ns=5 * 10**9, instrument=inst)
    for i in range(n):
        w.write(Item("bybit", "BTC/USDT", "book", DAY1 + i * 1000, DAY1 + i, book_payload(i)))
    if close:
        w.close_past_days("2025-01-02")
    w.stop()
    return root / "bybit" / "BTC-USDT" / "2025-01-01.rec.jsonl"


def test_a_closed_day_verifies_is_read_only_and_ends_with_its_count(tmp_path: Path) -> None:
    path = write_day(tmp_path, 5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    rep = verify_file(path)
    assert rep.problems == [] and rep.closed
    assert rep.records == 1 + 1 + 5 + 1  # header, session, 5 records, close
    recs = list(read_recording(path))
    assert [r.recv_ns for r in recs] == [DAY1 + i * 1000 for i in range(5)]
    assert recs[0].payload["bids"][0] == [61000.0, 1.5] and recs[0].exch_ns == DAY1


def test_a_record_of_the_next_day_closes_the_day_and_starts_a_file(tmp_path: Path) -> None:
    w = RecordWriter(tmp_path, clock_ns=lambda: DAY2)
    w.write(Item("bybit", "BTC/USDT", "book", DAY1, None, book_payload(0)))
    w.write(Item("bybit", "BTC/USDT", "book", DAY2, None, book_payload(1)))
    w.stop()
    folder = tmp_path / "bybit" / "BTC-USDT"
    day1, day2 = folder / "2025-01-01.rec.jsonl", folder / "2025-01-02.rec.jsonl"
    assert stat.S_IMODE(day1.stat().st_mode) == 0o444 and verify_file(day1).closed
    assert day2.stat().st_mode & 0o200  # today's file stays open for the next run
    assert verify_file(day2).problems == [] and not verify_file(day2).closed


def test_a_second_run_appends_to_the_day_and_a_damaged_tail_starts_a_new_part(
    tmp_path: Path,
) -> None:
    write_day(tmp_path, 3, close=False)
    path = write_day(tmp_path, 2, close=False)  # a restart the same day: appended, chained
    rep = verify_file(path)
    assert rep.problems == [] and rep.records == 1 + (1 + 3) + (1 + 2)
    with path.open("ab") as fh:
        fh.write(b"deadbeef {partial")  # a crash mid-line
    write_day(tmp_path, 1, close=False)
    part2 = path.with_name("2025-01-01.2.rec.jsonl")
    assert verify_file(part2).problems == []
    problems = verify_file(path).problems
    assert len(problems) == 1 and problems[0].record == rep.records
    assert "cut short" in problems[0].what
    with pytest.raises(ReplayError, match="cut short"):
        list(read_recording(path))


MUTATIONS = ("byte", "drop", "insert", "swap")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=2, max_value=12),
    mutation=st.sampled_from(MUTATIONS),
    where=st.integers(min_value=0, max_value=10_000),
    offset=st.integers(min_value=0, max_value=10_000),
    byte=st.integers(min_value=0, max_value=255),
)
def test_any_single_mutation_is_detected_and_named(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    mutation: str,
    where: int,
    offset: int,
    byte: int,
) -> None:
    """A changed byte, a dropped, inserted or swapped record anywhere in a closed day (header
    and closing record included) is found, and the first problem names the record where it is
    (an inserted exact copy of its neighbour: either of the two)."""
    root = tmp_path_factory.mktemp("rec")
    path = write_day(root, n)
    lines = path.read_bytes().split(b"\n")[:-1]
    k = where % len(lines)
    named = {k}
    if mutation == "byte":
        line = bytearray(lines[k])
        i = offset % len(line)
        new = byte if byte not in (line[i], 0x0A) else (line[i] + 1) % 256
        if new == 0x0A:
            new = 0x0B
        line[i] = new
        lines[k] = bytes(line)
    elif mutation == "drop":
        del lines[k]
        if k == len(lines):  # the closing record itself: missing at the end
            named = {k}
    elif mutation == "insert":
        src = offset % len(lines)
        lines.insert(k, lines[src])
        if src in (k, k - 1):  # a copy beside its original: either one is "the" inserted one
            named = {k, k + 1} if src == k else {k - 1, k}
    else:
        if k == len(lines) - 1:
            k -= 1
        lines[k], lines[k + 1] = lines[k + 1], lines[k]
        named = {k}
    os.chmod(path, 0o644)
    path.write_bytes(b"\n".join(lines) + b"\n")
    os.chmod(path, 0o444)
    rep = verify_file(path)
    assert rep.problems, f"{mutation} at {k} not detected"
    assert rep.problems[0].record in named, (mutation, k, [str(p) for p in rep.problems])
    with pytest.raises(ReplayError):
        list(read_recording(path))


def test_cockpit_data_verify_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write_day(data / "record", 4)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cockpit", "data", "verify", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert "every chain verifies" in ok.stdout
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"61000.0", b"61000.5")
    os.chmod(path, 0o644)
    path.write_bytes(b"\n".join(lines))
    bad = run()
    assert bad.returncode == 1
    assert f"FAIL {path}: record 3 (line 4): changed" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_a_full_queue_drops_counts_and_never_waits(tmp_path: Path) -> None:
    rec = MarketRecorder(tmp_path, queue_size=100)
    rec.accepting = True  # the writer thread is not started: nothing drains the queue
    for i in range(150):
        rec.offer("bybit", "BTC/USDT", "book", DAY1 + i, {"timestamp": i, "bids": [], "asks": []})
    assert rec.offered == 150 and rec.dropped == 50
    assert rec.dropped_by["bybit BTC/USDT"] == 50
    assert rec.venue_status("bybit")["dropped"] == 50
    rec.start()
    rec.stop()
    assert rec.writer.records == 100


async def test_drops_are_journaled_alerted_as_urgent_and_shown(tmp_path: Path) -> None:
    """Drops become a `recording` event (journaled, at most one a minute while they go on),
    which makes a recording_dropped alert in the safety lane, and a status line."""
    from cockpit.oneshot import format_event_body, format_recording
    from cockpit.venue_state import recording_segment
    from engine.alert_text import URGENT, AlertText
    from engine.config import parse_config
    from engine.journal import read_rows
    from engine.runtime import Engine
    from engine.vocabulary import AlertKind, EventKind
    from tests.conftest import default_dict, merge

    cfg = parse_config(merge(default_dict(), {"engine": {"data_dir": str(tmp_path)}}))
    engine = Engine(cfg, tmp_path)
    await engine.start()
    rec = MarketRecorder(tmp_path / "record", queue_size=100)
    rec.accepting = True
    try:
        for i in range(130):
            rec.offer("bybit", "BTC/USDT", "book", DAY1 + i, {"timestamp": i})
        await rec._report(engine, force=True)
        await rec._report(engine)  # nothing new: no second event
        await engine.committed()
    finally:
        await engine.stop()
    rows = [r for r in read_rows(engine.journal_path) if r.kind == EventKind.RECORDING]
    assert len(rows) == 1 and rows[0].payload["dropped"] == 30
    event = {"event": "recording", "ts": rows[0].ts, **rows[0].payload}
    alert = AlertText("[paper]").describe(event)
    assert alert is not None and alert.kind == AlertKind.RECORDING_DROPPED and alert.kind in URGENT
    assert "dropped 30 payloads" in alert.title and "bybit BTC/USDT 30" in alert.body
    assert "dropped 30 payloads (30 this run)" in format_event_body(event)
    assert recording_segment(rec.venue_status("bybit")) == ("recording 0, 30 DROPPED", "yellow")
    assert "30 DROPPED" in format_recording(rec.status())


def test_config_check_refuses_a_missing_recording_or_one_without_the_symbol(
    tmp_path: Path,
) -> None:
    from engine.config import ConfigError, check_runnable, parse_config
    from tests.conftest import default_dict, merge

    def cfg(path: Path, symbol: str) -> object:
        data = merge(
            default_dict(),
            {
                "engine": {"data_dir": str(tmp_path / "data")},
                "market": {"source": "replay", "replay": {"path": str(path), "kind": "recording"}},
            },
        )
        for strat in data["strategies"]:
            strat["symbols"] = [symbol]
        return parse_config(data)

    write_day(tmp_path / "record", 3)
    check_runnable(cfg(tmp_path / "record", "BTC/USDT"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no recording at"):
        check_runnable(cfg(tmp_path / "nothing", "BTC/USDT"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"no recording of ETH/USDT \(recorded: BTC/USDT\)"):
        check_runnable(cfg(tmp_path / "record", "ETH/USDT"))  # type: ignore[arg-type]


def test_a_past_day_left_open_by_an_earlier_run_is_closed_at_the_next_stop(
    tmp_path: Path,
) -> None:
    path = write_day(tmp_path, 3, close=False)
    assert path.stat().st_mode & 0o200 and not verify_file(path).closed
    assert verify_file(path).notes == [
        "not closed yet: its day is over (closed at the next engine stop)"
    ]
    later = RecordWriter(tmp_path, clock_ns=lambda: DAY2)
    later.stop()  # an engine stopping on a later day: the file's day is over
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    rep = verify_file(path)
    assert rep.closed and rep.problems == [] and rep.records == 1 + 1 + 3 + 1


def test_a_disk_that_fails_is_reported_and_what_follows_is_counted_dropped(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "record"
    blocker.write_text("a file where the recording folder should be")
    rec = MarketRecorder(blocker)
    rec.start()
    rec.offer("bybit", "BTC/USDT", "book", DAY1, {"timestamp": 1})
    deadline = time.monotonic() + 30
    while not rec.error and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.error.startswith(("FileExistsError", "NotADirectoryError"))
    for i in range(5):
        rec.offer("bybit", "BTC/USDT", "book", DAY1 + i, {"timestamp": i})
    rec.stop()
    assert rec.dropped == 5 + 1 and rec.writer.records == 0
    assert rec.status()["error"] == rec.error and rec.venue_status("bybit")["dropped"] == 6


def test_a_day_file_renamed_or_moved_into_another_place_does_not_verify(tmp_path: Path) -> None:
    """Each file's chain starts afresh, so a whole closed day copied in as another day (or
    into another symbol's folder) verified and replayed as that day: the same market twice
    (review). The header's day, part, symbol and venue must match where the file lies."""
    src = write_day(tmp_path / "a", 3)
    assert verify_file(src).problems == []
    root = tmp_path / "b"
    # 1. Copied in as the next day.
    day2 = root / "bybit" / "BTC-USDT" / "2025-01-02.rec.jsonl"
    day2.parent.mkdir(parents=True)
    day2.write_bytes(src.read_bytes())
    (rep,) = [verify_file(day2)]
    assert [p.record for p in rep.problems] == [0] and "misplaced" in rep.problems[0].what
    with pytest.raises(ReplayError, match="misplaced"):
        list(read_recording(day2))
    # 2. Moved into another symbol's folder under its own day's name.
    eth = root / "bybit" / "ETH-USDT" / "2025-01-01.rec.jsonl"
    eth.parent.mkdir(parents=True)
    eth.write_bytes(src.read_bytes())
    rep = verify_file(eth)
    assert rep.problems and "BTC/USDT recording in the folder ETH-USDT" in rep.problems[0].what
    with pytest.raises(ReplayError, match="misplaced"):
        list(read_recording(root / "bybit" / "ETH-USDT"))
    # 3. The same file under another venue's folder.
    okx = tmp_path / "c" / "record" / "okx" / "BTC-USDT" / "2025-01-01.rec.jsonl"
    okx.parent.mkdir(parents=True)
    okx.write_bytes(src.read_bytes())
    assert "venue folder okx" in verify_file(okx).problems[0].what
    # A lone copy outside the layout, under its own name, still verifies.
    lone = tmp_path / "2025-01-01.rec.jsonl"
    lone.write_bytes(src.read_bytes())
    assert verify_file(lone).problems == []


def test_a_recording_changed_near_its_end_is_refused_before_anything_is_replayed(
    tmp_path: Path,
) -> None:
    """Replay checked the chain as it streamed: a record changed near the end was found only
    after every record before it had been played (decisions made, paper orders filled) (review).
    Now the whole recording is verified when the replay is made; nothing is played."""
    from engine.marketdata.recording import RecordingReplay

    path = write_day(tmp_path, 6)
    os.chmod(path, 0o644)
    lines = path.read_bytes().split(b"\n")
    lines[-3] = lines[-3].replace(b'"bids":[[', b'"bids":[[1', 1)  # the last data record
    path.write_bytes(b"\n".join(lines))
    os.chmod(path, 0o444)
    with pytest.raises(ReplayError, match=r"record 7 .*changed.*nothing replayed"):
        RecordingReplay(tmp_path / "bybit", ["BTC/USDT"])


def test_the_queue_is_bounded_in_bytes_too_behind_a_stalled_disk(tmp_path: Path) -> None:
    """The queue was bounded in count only: 100,000 full venue books (tens of KB each) behind
    a stalled disk held gigabytes of the engine's memory (review). Payload bytes waiting are
    bounded too; what does not fit is dropped and counted, and the bytes come back as the
    writer takes them."""
    book = {"timestamp": 1, "bids": [[61000.0 + i, 1.5] for i in range(300)], "asks": []}
    size = len(orjson.dumps(book))
    rec = MarketRecorder(tmp_path, queue_size=1000, max_queued_bytes=10 * size)
    rec.accepting = True  # the writer thread is not started: a disk that does not keep up
    for i in range(25):
        rec.offer("bybit", "BTC/USDT", "book", DAY1 + i, book)
    assert rec.offered == 25 and rec.dropped == 15 and rec.queued_bytes == 10 * size
    rec.start()
    rec.stop()
    assert rec.writer.records == 10 and rec.queued_bytes == 0
