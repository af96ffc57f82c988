"""The fleet on the command line, no engine needed: the fleet file's rules (each bad file one
line naming the problem, exit 2, no traceback), how repeated --socket/--data-dir become a
fleet (and one of each stays today's single engine), and the fleet kill's argument rules."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.fleet import (
    ACCEPTED,
    FELL_BACK,
    MAX_ENGINES,
    REFUSED,
    UNREACHABLE,
    FleetError,
    fleet_exit_code,
    fleet_from_args,
    load_fleet,
)
from engine.control import default_socket_path
from engine.vocabulary import ExitCode
from tests.test_cli import run


def fleet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


BAD = [
    ("missing", None, "no such file"),
    ("not toml", "[engines.a\nsocket = 1", "not valid TOML"),
    ("empty", "", "no engines"),
    ("engines not a table", 'engines = "a"', "engines must be tables"),
    ("unknown top key", '[engines.a]\nsocket = "a.sock"\n[other]\nx = 1', "unknown key 'other'"),
    ("entry not a table", '[engines]\na = "a.sock"', "engines.a must be a table"),
    ("unknown engine key", '[engines.a]\nsockets = "a.sock"', "unknown key 'sockets'"),
    ("neither", "[engines.a]", "give exactly one of socket"),
    ("both", '[engines.a]\nsocket = "a.sock"\ndata_dir = "d"', "(not both)"),
    ("socket not a string", "[engines.a]\nsocket = 5", "engines.a.socket must be a non-empty"),
    ("empty socket", '[engines.a]\nsocket = "  "', "engines.a.socket must be a non-empty"),
    ("bad name", '[engines."no spaces"]\nsocket = "a.sock"', "engine name 'no spaces'"),
    (
        "one socket twice",
        '[engines.a]\nsocket = "x.sock"\n[engines.b]\nsocket = "./x.sock"',
        "both use the socket",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_fleet_file_is_one_line_naming_the_problem(
    tmp_path: Path, case: str, text: str | None, expected: str
) -> None:
    path = fleet(tmp_path, text) if text is not None else tmp_path / "nowhere.toml"
    with pytest.raises(FleetError) as err:
        load_fleet(path)
    message = str(err.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_the_engine_limit_boundary(tmp_path: Path) -> None:
    def engines(n: int) -> str:
        return "".join(f'[engines.e{i}]\nsocket = "e{i}.sock"\n' for i in range(n))

    assert len(load_fleet(fleet(tmp_path, engines(MAX_ENGINES)))) == MAX_ENGINES
    with pytest.raises(FleetError, match=f"more than {MAX_ENGINES}"):
        load_fleet(fleet(tmp_path, engines(MAX_ENGINES + 1)))


def test_paths_are_taken_from_the_fleet_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    path = fleet(
        tmp_path,
        '[engines.local]\nsocket = "run/e.sock"\n'
        '[engines.tunnel]\nsocket = "~/vps.sock"  # ssh -L ~/vps.sock:/run/.../cockpit.sock vps\n'
        '[engines.research]\ndata_dir = "/srv/research"\n',
    )
    got = load_fleet(path)
    assert [e.name for e in got] == ["local", "tunnel", "research"]  # the file's order
    assert got[0].socket == tmp_path / "run" / "e.sock"
    assert got[1].socket == tmp_path / "home" / "vps.sock"
    assert got[2].socket == default_socket_path(Path("/srv/research"))


def test_repeated_options_make_a_fleet_and_one_of_each_stays_one_engine(tmp_path: Path) -> None:
    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**kw)

    # One engine: None, and attach finds it exactly as before (--socket wins over --data-dir).
    assert fleet_from_args(args(socket=["a.sock"])) is None
    assert fleet_from_args(args(socket=["a.sock"], data_dir=["d"])) is None
    assert fleet_from_args(args(data_dir="d")) is None  # `cockpit --data-dir d attach`
    two = fleet_from_args(args(socket=["/x/a/cockpit.sock", "/y/a/cockpit.sock"]))
    assert two is not None and [e.name for e in two] == ["a", "a#2"]
    tunnels = fleet_from_args(args(socket=["/t/vps1.sock", "/run/r2/e.sock", "/u/vps1/s.sock"]))
    assert tunnels is not None and [e.name for e in tunnels] == ["vps1", "r2", "s"]
    dirs = fleet_from_args(args(data_dir=["/srv/binance", "/srv/okx"]))
    assert dirs is not None and [e.name for e in dirs] == ["binance", "okx"]
    assert dirs[0].socket == default_socket_path(Path("/srv/binance"))
    path = fleet(tmp_path, '[engines.main]\nsocket = "m.sock"\n')
    mixed = fleet_from_args(args(fleet=str(path), socket=["/tmp/other.sock"]))
    assert mixed is not None and [e.name for e in mixed] == ["main", "other"]
    with pytest.raises(FleetError, match="both use the socket"):
        fleet_from_args(args(socket=["/tmp/s.sock", "/tmp/./s.sock"], fleet=None))


def test_attach_with_a_bad_fleet_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = fleet(tmp_path, '[engines.a]\nsocket = "a.sock"\nport = 9')
    result = run("attach", "--fleet", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "unknown key 'port'" in result.stderr and str(bad) in result.stderr


def test_fleet_kill_argument_rules(tmp_path: Path) -> None:
    path = fleet(tmp_path, '[engines.a]\nsocket = "a.sock"\n')
    for argv, expected in (
        (["--all"], "needs both --all and --fleet"),
        (["--fleet", str(path)], "needs both --all and --fleet"),
        (["--all", "--fleet", str(path), "--socket", "x.sock"], "leave out"),
        (["--all", "--fleet", str(tmp_path / "none.toml")], "no such file"),
    ):
        result = run("kill", *argv, "--reason", "test")
        assert result.returncode == 2, (argv, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1


def test_fleet_kill_with_no_engine_running_says_so_per_engine(tmp_path: Path) -> None:
    """Nothing answers: one line each, exit 3. An engine listed by its data dir gets its KILL
    file, as `cockpit kill --data-dir` does (it engages the kill switch when it starts)."""
    (tmp_path / "d").mkdir()
    path = fleet(
        tmp_path,
        '[engines.a]\nsocket = "a.sock"\n[engines.b]\ndata_dir = "d"\n',
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}  # no real engine
    result = run("kill", "--all", "--fleet", str(path), "--reason", "test", env=env)
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["a", "unreachable"], ["b", "unreachable"]]
    assert "KILL file not written" in lines[0] and "wrote" in lines[1]
    assert (tmp_path / "d" / "KILL").read_text().strip().startswith("halt")
    assert "confirmed by 0 of 2" in result.stderr


def test_the_last_alert_column_reads_the_snapshots_alerts() -> None:
    """``snapshot["alerts"]["last"]`` (the alert dispatcher's view): its time and title, and
    "(not delivered)" in red when it failed; "-" for an engine without alerts (or an older
    one whose snapshot has no "alerts" at all)."""
    from cockpit.tui.fleet import last_alert

    ts = 1_733_486_400_000_000_000 + 3_723_000_000_000  # 2024-12-06 13:02:03 UTC
    sent = {"alerts": {"last": {"ts": ts, "kind": "kill", "title": "Kill engaged", "ok": True}}}
    failed = {"alerts": {"last": {"ts": ts, "kind": "fill", "title": "Fill\x1b[2J", "ok": False}}}
    assert last_alert(sent).plain == " 13:02:03 Kill engaged"
    shown = last_alert(failed)
    assert "13:02:03 Fill" in shown.plain and "\x1b" not in shown.plain  # no terminal escapes
    assert shown.plain.endswith("(not delivered)") and "red" in str(shown.style)
    for snap in ({}, {"alerts": {"last": None}}, {"alerts": None}, {"alerts": {"routes": 0}}):
        assert last_alert(snap).plain.strip() == "-"


@settings(max_examples=int(os.environ.get("COCKPIT_FLEET_EXAMPLES", "200")), deadline=None)
@given(st.lists(st.sampled_from([ACCEPTED, REFUSED, UNREACHABLE, FELL_BACK]), max_size=8))
def test_the_fleet_kill_exits_0_only_when_every_engine_confirmed(answers: list[str]) -> None:
    code = fleet_exit_code(answers)
    assert (code == ExitCode.OK) == (bool(answers) and set(answers) == {ACCEPTED})
    if {UNREACHABLE, FELL_BACK} & set(answers):
        assert code == ExitCode.UNREACHABLE  # a script can tell "not reached" from "refused"


@settings(max_examples=int(os.environ.get("COCKPIT_FLEET_EXAMPLES", "200")), deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "ok": st.booleans(),
            "sent": st.booleans(),
            "timeout": st.booleans(),
            "message": st.text(max_size=20),
        },
    )
)
def test_the_cockpit_calls_a_kill_accepted_only_when_the_engine_said_ok(
    reply: dict[str, object],
) -> None:
    from cockpit.tui.fleet_app import kill_answer

    answer = kill_answer(reply)
    assert (answer == ACCEPTED) == bool(reply.get("ok"))
    if not reply.get("ok") and (reply.get("sent") is False or reply.get("timeout")):
        assert answer == UNREACHABLE
