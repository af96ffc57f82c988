"""An adversarial review of the changes made today (review-today): each test is a hole found by
attacking one of them as a hostile checker would, failing before its fix.

Tried and held (no test added):
- An exit's refusal backoff across kill -9: its count and retry time are not journaled, so a
  restarted engine fires the protective exit again at once (sooner, never later).
- An exit backoff across a kill at flatten: the kill cancels the exit in flight (cancelled,
  not refused: the count starts again) and the flatten goes on its own path; reduces_exposure
  counts the other's open order, so the two never close the position twice.
- A take-profit whose venue stop's cancel is confirmed with the price back: the stop goes back;
  with the price beyond the stop meanwhile the engine watches the level itself (native cleared).
- A kill run again while engaged at its level changes nothing (core.kill returns at once), so
  running a finished kill's key again (the fix above) cannot flatten twice or write a new state.
- KillArgs: a client's own "note" key is named as ignored, never shown as the reply's note; a
  list, number or null level engages halt and says so; non-object arguments engage halt.
- A kill at entries keeps the waiting exits, a pause keeps those within the strategy's own
  position, a breaker's halt rejects all of them as a kill at halt does.
- stop_mark moves on a kill engaged or raised, a breaker's halt and any pause (a breaker's
  included), never back: a move waiting on its cancel across any of them is judged again.
- The KILL file: 4 KB of comments before the word reads halt (fail closed), a word cut at the
  4096th byte is none, CRLF lines and a BOM read as the word.
- A same-price limit signal with the same time to live does not churn the order: its
  ts_created is the send time, the base of its expire_ts.
- quote_currency spelled in another case than the symbol's quote is refused, naming both.
- A late SIGUSR1 is kept in the KILL file by the engine that held the data dir, decided by the
  parsed command, so options before `engine` (the hole below) change nothing there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.control import ControlServer
from engine.runtime import Engine
from tests.test_control_support import Raw, served  # noqa: F401


async def _operator(path: Path, name: str) -> Raw:
    raw = await Raw.open(path)
    assert (await raw.hello(name=name, subscribe=False))["type"] == "welcome"
    return raw


# ------------------------------------------------------------------ a kill's idempotency key


async def test_a_kill_sent_again_with_its_key_after_a_release_engages(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """A script that numbers its commands from 1 on every connection sent its kill (id "1"),
    the switch was released, and the same script's same kill an hour later returned the
    remembered reply, "kill switch engaged: halt", as a duplicate: nothing engaged and the
    engine traded on. An emergency stop is never answered from the cache once it is done."""
    engine, server = served
    kill = {"type": "command", "id": "1", "name": "kill", "args": {"reason": "cron stop"}}
    script = await _operator(server.path, "script")
    try:
        await script.send(kill)
        assert (await script.recv_type("reply"))["ok"]
    finally:
        await script.close()
    assert engine.core is not None and engine.core.safety.kill.level == "halt"
    desk = await _operator(server.path, "desk")
    try:
        release = {"reason": "checked", "confirm": "RELEASE"}
        await desk.send({"type": "command", "id": "r", "name": "release", "args": release})
        assert (await desk.recv_type("reply"))["ok"]
    finally:
        await desk.close()
    assert not engine.core.safety.kill.engaged
    script = await _operator(server.path, "script")
    try:
        await script.send(kill)
        reply = await script.recv_type("reply")
        assert reply["ok"] and not reply.get("duplicate"), reply
    finally:
        await script.close()
    assert engine.core.safety.kill.level == "halt"


# ------------------------------------------------------------------ a decision the other way


def test_a_reversal_waiting_is_withdrawn_by_a_decision_the_other_way() -> None:
    """A decision the other way withdraws the strategy's entry still waiting, but keeps a
    request that closes its own position, judged by side alone: long 0.5, "sell 1" waiting
    (it closes the 0.5 and opens a short of 0.5), then "buy". The sell stayed approvable, and
    approved it left the strategy short against its newest decision. It goes now; a sell
    within the position stays (tests/test_review_lim.py's boundary)."""
    from engine.types import Action, Fill, Liquidity, Side
    from tests.test_review_lim import SlowVenue

    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    cut = Fill("f-cut", "o-cut", "s1", "X/USDT", "sim", Side.SELL, 0.5, 100.0, 0.0,
               Liquidity.TAKER, h.ts)  # fmt: skip
    h.handle(h.core.apply_fill(cut))
    assert h.core.slots[("s1", "X/USDT")].position.qty == 0.5
    h.core.approvals._modes["s1"] = "approve"
    h.strat.say(Action.SELL, None)  # fixed_qty 1: a reversal to short 0.5
    h.quote()
    (sell,) = h.core.approvals.pending()
    assert (sell.intent.side, sell.intent.qty) == (Side.SELL, 1.0)
    h.strat.say(Action.BUY, None)
    h.quote()
    assert [p.intent.side for p in h.core.approvals.pending()] == [Side.BUY]


# ------------------------------------------------------------------ SIGUSR1 at start


_SIGNALLED_BEFORE_THE_CLI_LOADS = """
import os, signal, sys
import cockpit
os.kill(os.getpid(), signal.SIGUSR1)  # before cockpit.cli and asyncio load
from cockpit import cli
sys.exit(cli.main())
"""


def test_a_sigusr1_at_start_engages_the_kill_with_options_before_the_command(
    tmp_path: Path,
) -> None:
    """ "SIGUSR1 engages halt, also when it arrives while the engine is starting" held only for
    `cockpit engine ...`: the parser takes the top-level options before the command too, and
    `cockpit --data-dir D engine` (or --config X engine) installed no handler, so a SIGUSR1 at
    its start terminated it (exit 138, nothing engaged)."""
    import json
    import subprocess
    import sys

    from tests.test_control_support import short_dir

    data = tmp_path / "data"
    with short_dir() as d:
        rest = ["--data-dir", str(data), "engine", "--socket", str(d / "e.sock"), "--for", "1"]
        proc = subprocess.run(
            [sys.executable, "-c", _SIGNALLED_BEFORE_THE_CLI_LOADS, *rest],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    final = [json.loads(line) for line in proc.stdout.splitlines() if '"final"' in line]
    assert final and final[-1]["kill_switch"] == "halt"


def test_the_engine_command_is_found_after_the_top_level_options() -> None:
    from cockpit import runs_engine

    assert runs_engine(["engine"]) and runs_engine(["--config", "x.toml", "engine", "--for", "1"])
    assert runs_engine(["--data-dir=D", "--live", "engine"])
    assert runs_engine(["--conf", "engine.toml", "--metrics", "0", "engine"])
    assert runs_engine(["--", "engine"])
    # The boundary: a value named engine is no command, nor is engine after another command.
    assert not runs_engine(["--config", "engine"])
    assert not runs_engine(["kill", "--reason", "engine"])
    assert not runs_engine(["--live", "attach", "engine"])
    assert not runs_engine([])


# ------------------------------------------------------------------ ~ on the command line


def test_a_path_starting_with_a_tilde_on_the_command_line_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config refuses a data_dir starting with ~ (no shell expands a file), but the
    command line took one: `cockpit engine --data-dir=~/trading` (a shell expands ~ only at
    the start of a word) or `--data-dir ~/trading` in a service file's ExecStart made a folder
    named ~ where the engine started and ran on that new, empty data dir: no journal, no kill
    switch, no positions. Refused, with the whole path to write; a path with ~ inside is one."""
    from cockpit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for argv in (
        ["engine", "--data-dir", "~/trading", "--for", "1"],
        ["--data-dir=~/trading", "engine", "--for", "1"],
        ["status", "--socket", "~/e.sock"],
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2, argv
        err = capsys.readouterr().err
        assert "starts with ~" in err and str(tmp_path / "home" / "trading")[:-8] in err, err
        assert list(tmp_path.iterdir()) == [], argv
    from cockpit.argtypes import expanded_path_text, path_text

    assert path_text("data~/x") == "data~/x" and path_text("./~") == "./~"
    # attach and --fleet expand ~ themselves (cockpit/fleet.py): taken there as before
    assert expanded_path_text("~/e.sock") == "~/e.sock"


# ------------------------------------------------------------------ kill --config --socket


async def _cli(*argv: str) -> tuple[int, str, str]:
    from tests.test_review_pr import _cli as run

    return await run(*argv)


async def test_a_kill_never_goes_to_a_socket_serving_another_data_dir_than_the_configs(
    served: tuple[Engine, ControlServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """`cockpit kill --socket S --data-dir D` no longer spends the kill on an engine S serves
    for another data dir, but `cockpit kill --config C --socket S` still did: C names the
    data dir (as --data-dir does: "TOML config naming the data dir"), S served another
    engine, that one halted, exit 0, and C's traded on. The socket is skipped, said so, and
    the kill goes the data dir's own ways (here its KILL file)."""
    from engine.datadir import read_kill_level

    engine_a, server = served
    data_b = tmp_path / "b"
    data_b.mkdir(mode=0o700)
    config = tmp_path / "b.toml"
    config.write_text(f'[engine]\ndata_dir = "{data_b}"\n')
    code, out, err = await _cli(
        "kill", "--socket", str(server.path), "--config", str(config), "--reason", "b only"
    )
    assert engine_a.core is not None and not engine_a.core.safety.kill.engaged, (out, err)
    assert f"serves {engine_a.data_dir}, not {data_b}" in out + err
    assert read_kill_level(data_b / "KILL") == "halt"
    # The boundary: the config naming the socket's own data dir kills through it.
    config.write_text(f'[engine]\ndata_dir = "{engine_a.data_dir}"\n')
    code, out, err = await _cli("kill", "--socket", str(server.path), "--config", str(config))
    assert code == 0 and engine_a.core.safety.kill.level == "halt", (out, err)


async def test_a_release_with_a_config_naming_another_data_dir_is_refused(
    served: tuple[Engine, ControlServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same on the other commands: `cockpit release --config C --socket S` released the
    engine at S, which serves another data dir than C names. Refused (exit 2), nothing sent;
    a config naming S's own data dir releases it."""
    engine_a, server = served
    assert (await engine_a.command("kill", {"reason": "a"}))["ok"]
    config = tmp_path / "b.toml"
    config.write_text(f'[engine]\ndata_dir = "{tmp_path / "b"}"\n')
    release = ("release", "--confirm", "RELEASE", "--reason", "done", "--socket", str(server.path))
    code, out, err = await _cli(*release, "--config", str(config))
    assert code == 2 and "give the one you mean" in err, (out, err)
    assert engine_a.core is not None and engine_a.core.safety.kill.engaged
    config.write_text(f'[engine]\ndata_dir = "{engine_a.data_dir}"\n')
    code, out, err = await _cli(*release, "--config", str(config))
    assert code == 0 and not engine_a.core.safety.kill.engaged, (out, err)
