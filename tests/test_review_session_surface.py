"""Review of the day's changes outside the engine core, taken as a whole (review-diff-b).

Attacks that held:
- `main(["engine", ...])` in-process (run, and a config error: exit 2, one line on stderr):
  SIGUSR1's disposition after it returns is what it was; the JSON lines reach the saved stdout.
- A running engine's socket path replaced by a regular file, a FIFO or a symlink: left alone
  (no spin, no clobbering); removed again, it is served again within the second.
- By reading (not run here: tests run as root): the socket directory re-made by another user is
  refused by `check_private_dir`; a second engine on a removed path wins the lock and the first
  leaves its files alone (`_relock`).
- `--data-dir` relative, under sticky /tmp, or in a group-writable directory: accepted.
- `allow_short = true` under testnet: `config check` (with or without `--profile`) exit 2 naming
  `strategies[0].allow_short`; profiles cannot set the mode.
- README's `--stop-loss 0.5` backtest prints `stop-loss 51 (-1,382.68 USDT); strategy signal 750
  (-5,857.32 USDT)` as written; the config backtest and the walk-forward sweep run (exit 0), the
  windows starting on whole bars.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.datadir import DataDirUnsafe, check_own_dir
from tests.test_control_support import WAIT, short_dir

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
ENV.pop("XDG_RUNTIME_DIR", None)


def _tree(root: Path, mode: int) -> tuple[Path, Path]:
    shared = root / "shared"
    shared.mkdir()
    home = shared / "alice"
    home.mkdir(mode=0o755)
    data = home / "data"
    data.mkdir(mode=0o700)
    shared.chmod(mode)
    return shared, data


@pytest.mark.parametrize(("mode", "refused"), [(0o777, True), (0o1777, False), (0o775, False)])
def test_a_data_dir_below_a_directory_anyone_may_write_is_refused(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    """docs/operations.md: a data directory inside a directory every user may write into is
    refused. Only the immediate parent was looked at: in /shared (0777)/alice/data anyone may
    rename /shared/alice away and put another alice (with an older data) in its place."""
    shared, data = _tree(tmp_path, mode)
    try:
        if refused:
            with pytest.raises(DataDirUnsafe, match=str(shared)):
                check_own_dir(data)
        else:
            check_own_dir(data)
    finally:
        shared.chmod(0o755)


def test_a_data_dir_reached_through_a_link_anyone_may_replace_is_refused(tmp_path: Path) -> None:
    """`--data-dir /shared/link` where link -> ~/data: the real path's parents are private, but
    anyone may replace the link in /shared (0777) with one to another data directory."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    data = home / "data"
    data.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "link").symlink_to(data)
    shared.chmod(0o777)
    try:
        with pytest.raises(DataDirUnsafe, match=str(shared)):
            check_own_dir(shared / "link")
        check_own_dir(data)  # the same directory named by its own path
    finally:
        shared.chmod(0o755)


def test_relative_data_dir_in_a_private_cwd_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    os.chmod(tmp_path, 0o770)  # group-write is the owner's choice
    monkeypatch.chdir(tmp_path)
    check_own_dir(Path("data"))


def test_a_gone_json_reader_leaves_the_engines_stderr_where_it_was() -> None:
    """`cockpit engine 2>>engine.log | jq ...` and jq exits: the lines' pipe went to /dev/null
    through ``sys.stdout``, which ``cmd_engine`` had pointed at stderr, so it was stderr (fd 2)
    that went to /dev/null: every later line of the engine's (`engine stopped trading: ...`,
    the control socket's and the venues' warnings) was lost from the log. The lines' own
    descriptor goes to /dev/null; stderr stays where the trader sent it."""
    with short_dir() as d:
        cfg = d / "c.toml"
        text = (REPO / "config" / "default.toml").read_text()
        cfg.write_text(text.replace("summary_interval_s = 5", "summary_interval_s = 0.1"))
        err = d / "err"
        argv = [sys.executable, "-m", "cockpit", "engine", "--config", str(cfg), "--for", "60"]
        with err.open("w") as log:
            proc = subprocess.Popen(
                [*argv, "--data-dir", str(d / "data"), "--socket", str(d / "s" / "e.sock")],
                cwd=REPO,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(b"{")
            proc.stdout.close()  # the reader goes away
            fds = [f"/proc/{proc.pid}/fd/{n}" for n in (1, 2)]
            deadline = time.monotonic() + WAIT
            while os.devnull not in (seen := [os.readlink(f) for f in fds]):
                assert proc.poll() is None and time.monotonic() < deadline, seen
                time.sleep(0.05)
            assert seen == [os.devnull, str(err)]
        finally:
            proc.terminate()
            proc.wait(WAIT)
