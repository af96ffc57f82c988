"""The one-shot CLI commands against a running engine: output, --json, exit codes, finding the
socket, the typed release confirmation, and a fast start (no heavy imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cockpit import oneshot
from cockpit.oneshot import build_parser, run_oneshot
from tests.conftest import REPO
from tests.test_control_support import ThreadEngine, short_dir
from tests.test_tui_venues import (
    FILL_KEY,
    UNKNOWN_KEY,
    UNKNOWN_LINE,
    base_snapshot,
    venues_scenario,
)


@pytest.fixture
def te(tmp_path: Path) -> Iterator[ThreadEngine]:
    """An idle engine (clock frozen) with some approvals waiting, served on a short path."""
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as t:
        t.advance(3000)
        yield t


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_oneshot(build_parser().parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def sock(te: ThreadEngine) -> list[str]:
    return ["--socket", str(te.socket)]


def test_importing_the_cli_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, cockpit.oneshot, cockpit.socket_client;"
        "heavy = [m for m in ('ccxt', 'pandas', 'textual', 'engine.core', 'engine.runtime')"
        " if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_status(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", *sock(te))
    assert code == 0, err
    assert "trading     ACTIVE" in out and "kill        off" in out
    assert "pending" in out and "paper" in out
    assert "venue       sim  connected, simulated, no reconciliation (paper)" in out
    assert "difference" not in out
    code, out, _ = run(capsys, "status", "--json", *sock(te))
    snap = json.loads(out)
    assert code == 0 and snap["seq"] == te.call(lambda: te.engine.seq)
    assert snap["trace"] == [] and snap["equity_curve"] == []


def test_approvals_approve_and_reject(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    pending = json.loads(out)
    assert code == 0 and len(pending) >= 2
    first, second = pending[-1], pending[-2]
    code, out, _ = run(capsys, "approvals", *sock(te))
    assert code == 0 and first["id"] in out and "EXPIRES" in out

    code, out, err = run(capsys, "approve", first["id"], "--hash", first["hash"], *sock(te))
    assert code == 0, err
    assert f"{first['id']}: approved" in out
    code, out, err = run(capsys, "reject", second["id"], "--reason", "too big", "--json", *sock(te))
    reply = json.loads(out)
    assert code == 0 and reply["ok"] and reply["outcome"]["reason"] == "too big"
    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    assert {first["id"], second["id"]}.isdisjoint(a["id"] for a in json.loads(out))
    # Approving again is refused by the engine: exit 1 with its reason.
    code, out, err = run(capsys, "approve", first["id"], *sock(te))
    assert code == 1 and first["id"] in err and out == ""


def test_pause_resume_and_unknown_strategy(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pause", "ema_cross", "--reason", "lunch", *sock(te))
    assert code == 0 and "ema_cross paused" in out
    code, out, _ = run(capsys, "status", *sock(te))
    assert "ema_cross [approve] PAUSED" in out and "lunch" in out
    code, out, _ = run(capsys, "resume", "ema_cross", *sock(te))
    assert code == 0 and "resumed" in out
    code, _, err = run(capsys, "pause", "nope", *sock(te))
    assert code == 1 and "unknown strategy 'nope'" in err


def test_trace(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "trace", "-n", "5", *sock(te))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    code, out, _ = run(capsys, "trace", "-n", "7", "--json", *sock(te))
    items = json.loads(out)
    assert len(items) == 7 and items == sorted(items, key=lambda e: e["seq"])
    for item in items:
        assert oneshot.format_trace_line(item)


def test_kill_and_release_by_flag_and_by_typed_phrase(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "kill", "--level", "entries", "--reason", "test", *sock(te))
    assert code == 0 and "through the control socket" in out
    code, out, _ = run(capsys, "status", *sock(te))
    assert "ENGAGED at entries" in out

    # A script must pass the phrase; with no terminal there is nobody to ask.
    monkeypatch.setattr(oneshot, "_stdin_is_tty", lambda: False)
    code, _, err = run(capsys, "release", "--reason", "done", *sock(te))
    assert code == 2 and "--confirm RELEASE" in err
    code, _, err = run(capsys, "release", "--reason", "done", "--confirm", "yes", *sock(te))
    assert code == 1 and "RELEASE" in err

    # At a terminal: a typed phrase that does not match changes nothing; the right one releases.
    monkeypatch.setattr(oneshot, "_stdin_is_tty", lambda: True)
    answers = iter(["release", "RELEASE"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code, _, err = run(capsys, "release", "--reason", "done", *sock(te))
    assert code == 1 and "did not match" in err and "ENGAGED" not in err
    assert "engaged at entries" in err  # it showed what is being released
    code, out, err = run(capsys, "release", "--reason", "done", *sock(te))
    assert code == 0 and "released" in out, err
    code, _, err = run(capsys, "release", "--reason", "again", *sock(te))
    assert code == 1 and "not engaged" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["approvals"],
        ["approve", "x"],
        ["reject", "x"],
        ["pause", "s"],
        ["resume", "s"],
        ["trace"],
        ["release", "--reason", "r", "--confirm", "RELEASE"],
        ["resolve", "binance", "k", "cancel", "--reason", "r"],
    ],
)
def test_no_engine_is_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with short_dir() as sd:
        code, out, err = run(capsys, *argv, "--socket", str(sd / "none.sock"))
        assert code == 3 and out == ""
        assert "not reachable" in err and str(sd / "none.sock") in err
        assert err.count("\n") == 1
        code, out, _ = run(capsys, *argv, "--socket", str(sd / "none.sock"), "--json")
        assert code == 3 and json.loads(out)["ok"] is False


def test_kill_without_an_engine_writes_the_kill_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with short_dir() as sd:
        code, out, err = run(
            capsys, "kill", "--reason", "x", "--level", "flatten", "--data-dir", str(sd)
        )
        assert code == 3 and "no running engine" in err and str(sd / "KILL") in err
        assert (sd / "KILL").read_text().strip() == "flatten"
        code, out, _ = run(
            capsys, "kill", "--reason", "x", "--data-dir", str(sd / "gone"), "--json"
        )
        result = json.loads(out)
        assert code == 3 and not result["ok"] and not result["kill_file"]["written"]


def test_the_socket_is_found_from_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with short_dir() as sd, ThreadEngine(sd / "data", sd / "data" / "cockpit.sock"):
        code, _, err = run(capsys, "status", "--data-dir", str(sd / "data"))
        assert code == 0, err
        config = tmp_path / "c.toml"
        config.write_text(f'[engine]\ndata_dir = "{sd / "data"}"\n')
        code, _, err = run(capsys, "status", "--config", str(config))
        assert code == 0, err
    code, _, err = run(capsys, "status", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read config" in err


def test_the_socket_is_found_under_xdg_runtime_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with short_dir() as sd:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(sd))
        with ThreadEngine(tmp_path / "data", sd / "cockpit" / "default.sock"):
            code, _, err = run(capsys, "status", "--data-dir", str(tmp_path / "data"))
            assert code == 0, err
            code, _, err = run(capsys, "status")  # no hint: the engine on the default socket
            assert code == 0, err


def test_parser_rejects_bad_arguments() -> None:
    parser = build_parser()
    # (`cockpit kill` without --reason engages: review-ap, test_review_ap.py; nor is a word
    # that is no level refused: it engages halt, tests/test_kill_form.py)
    for argv in (["trace", "-n", "x"], ["trace", "-n", "-1"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2


# ---------------------------------------------------------------------- venues and resolve


class FakeSocketClient:
    """Stands in for SocketClient: serves ``snap`` and answers commands with ``reply``."""

    snap: ClassVar[dict[str, Any]] = {}
    reply: ClassVar[dict[str, Any]] = {"ok": True, "message": "ok"}
    made: ClassVar[list[FakeSocketClient]] = []

    def __init__(self, path: Any, **kwargs: Any) -> None:
        self.path = path
        self.role = kwargs.get("role")
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.server_pid = None
        FakeSocketClient.made.append(self)

    async def connect(self, **kwargs: Any) -> None:
        return None

    async def snapshot(self, trace: int = 0, curve: int = 0) -> dict[str, Any]:
        return json.loads(json.dumps(self.snap))

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.commands.append((name, args))
        return dict(self.reply)

    async def close(self) -> None:
        return None


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeSocketClient]:
    """An engine on two venues, binance HALTED by reconciliation (see test_tui_venues)."""
    FakeSocketClient.snap = base_snapshot(venues_scenario())
    FakeSocketClient.reply = {"ok": True, "message": "ok"}
    FakeSocketClient.made = []
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    return FakeSocketClient


def test_status_lists_each_venue_and_what_waits_for_an_answer(
    fake_engine: type[FakeSocketClient], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", "--socket", "/run/e.sock")
    assert code == 0, err  # a HALTED venue is state to report, not a failed command
    assert fake_engine.made[0].role == "viewer"
    lines = out.splitlines()
    binance = next(line for line in lines if line.startswith("venue       binance"))
    assert "connected" in binance and "ws 2/2 synced" in binance and "clock +12 ms" in binance
    kraken = next(line for line in lines if line.startswith("venue       kraken"))
    assert "clock -3 ms" in kraken and "kill: cancel-all ok" in kraken
    assert any("HALTED: reconciliation found 2 unresolved difference(s)" in x for x in lines)
    assert f"difference  binance {UNKNOWN_KEY} (unknown order, BLOCKING): {UNKNOWN_LINE}" in lines
    assert (
        f"            answer: cockpit resolve binance {UNKNOWN_KEY} adopt|cancel "
        "--reason TEXT --socket /run/e.sock"
    ) in lines
    assert (
        f"            answer: cockpit resolve binance {FILL_KEY} adopt|acknowledge "
        "--reason TEXT --socket /run/e.sock"
    ) in lines
    assert "ck-1-9" not in out  # a missing order sorts itself out: nothing to answer

    code, out, _ = run(capsys, "status", "--json", "--socket", "/run/e.sock")
    assert code == 0
    assert json.loads(out)["venues"] == fake_engine.snap["venues"]


def test_status_after_every_answer_lists_no_difference(
    fake_engine: type[FakeSocketClient], capsys: pytest.CaptureFixture[str]
) -> None:
    info = fake_engine.snap["venues"]["binance"]
    rec = info["reconciliation"]
    rec["resolutions"] = [
        {"key": UNKNOWN_KEY, "action": "cancel", "by": "alice", "ts": 1, "note": "x"},
        {"key": FILL_KEY, "action": "adopt", "by": "alice", "ts": 1, "note": "x"},
    ]
    rec["trading_state"], info["halted"] = "ACTIVE", ""
    code, out, _ = run(capsys, "status", "--socket", "/run/e.sock")
    assert code == 0
    assert "HALTED" not in out and "difference" not in out and "answer:" not in out


def test_resolve_sends_the_command_and_maps_the_reply(
    fake_engine: type[FakeSocketClient], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["resolve", "binance", UNKNOWN_KEY, "cancel", "--reason", "placed by hand"]
    fake_engine.reply = {"ok": True, "message": f"binance: {UNKNOWN_KEY} canceled"}
    code, out, err = run(capsys, *argv, "--socket", "/run/e.sock")
    assert (code, err) == (0, "")
    assert out.strip() == f"binance: {UNKNOWN_KEY} canceled"
    client = fake_engine.made[-1]
    assert client.role == "operator"
    assert client.commands == [
        (
            "resolve",
            {
                "venue": "binance",
                "key": UNKNOWN_KEY,
                "action": "cancel",
                "reason": "placed by hand",
            },
        )
    ]
    # Refused by the engine (for example an answer that does not fit): exit 1, its reason.
    fake_engine.reply = {"ok": False, "message": "unknown order can be adopt or cancel"}
    code, out, err = run(capsys, *argv, "--socket", "/run/e.sock")
    assert code == 1 and out == ""
    assert err == "cockpit resolve: unknown order can be adopt or cancel\n"
    code, out, _ = run(capsys, *argv, "--socket", "/run/e.sock", "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    # No answer in time: the engine is not reachable.
    fake_engine.reply = {"ok": False, "message": "no reply within 5 s", "timeout": True}
    code, _, _ = run(capsys, *argv, "--socket", "/run/e.sock")
    assert code == 3


def test_resolve_needs_a_reason_and_a_known_action(
    fake_engine: type[FakeSocketClient], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "resolve", "binance", "k", "cancel", "--reason", "  ")
    assert code == 2 and out == "" and err.count("\n") == 1 and "reason is required" in err
    assert not any(c.commands for c in fake_engine.made)
    parser = build_parser()
    for argv in (
        ["resolve", "binance", "k", "nuke", "--reason", "r"],
        ["resolve", "binance", "k", "cancel"],
        ["resolve", "binance", "cancel", "--reason", "r"],
    ):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2


def test_resolve_against_a_paper_engine_is_refused(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Paper has no reconciliation: whatever the engine says, it refuses (exit 1, one line)."""
    code, out, err = run(capsys, "resolve", "sim", "k", "adopt", "--reason", "x", *sock(te))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("cockpit resolve: ")
