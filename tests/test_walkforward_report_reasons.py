"""The walk-forward text report names why a window could not run (``--json`` always did);
it said only n/a, and a trader could not tell a window with no trades from one that failed."""

from __future__ import annotations

from cockpit.research_report import render_walkforward
from engine.research.sweep import SweepRow
from engine.research.walkforward import WalkForwardResult, Window, WindowResult

DAY = 86_400
T0 = 1_704_067_200 * 1_000_000_000


def _result(oos: SweepRow | None) -> WalkForwardResult:
    w = Window(0, T0, T0 + 10 * DAY * 10**9, T0 + 10 * DAY * 10**9, T0 + 15 * DAY * 10**9)
    best = SweepRow(0, {"fast": 5, "slow": 30}, None, "warm-up takes every bar of the window")
    return WalkForwardResult(
        strategy="ema_cross",
        param_names=["fast", "slow"],
        sort="sharpe",
        train_s=10 * DAY,
        test_s=5 * DAY,
        windows=[WindowResult(w, best, oos, 1)],
        skipped=[],
        combinations=1,
        cluster="serial",
        elapsed_s=0.1,
        data={
            "path": "bars.csv",
            "rows": 100,
            "kind": "bars",
            "first_time": None,
            "last_time": None,
        },
        options={},
    )


def test_a_window_that_could_not_run_says_why() -> None:
    oos = SweepRow(0, {"fast": 5, "slow": 30}, None, "no bars in the test window\x1b[2J")
    text = render_walkforward(_result(oos))
    assert "window 1 in sample: warm-up takes every bar of the window" in text
    # One line, escaped: a reason from a data file never restyles the terminal.
    assert "window 1 out of sample: no bars in the test window\\x1b[2J" in text
    assert "\x1b" not in text


def test_only_a_side_that_failed_gets_a_line() -> None:
    """No out-of-sample row (nothing chosen to run): only the in-sample failure is named."""
    text = render_walkforward(_result(None))
    assert "window 1 in sample: warm-up" in text
    assert "window 1 out of sample" not in text
