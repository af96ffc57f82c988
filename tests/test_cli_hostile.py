"""The CLI against what it does not control: snapshots with wrong-typed fields from a hostile or
buggy engine, broken config files, and a reader that closes the pipe. Each ends in output or one
line and an exit code (0 ok, 1 failed, 2 bad usage or config, 3 no engine), never a traceback."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit import oneshot
from cockpit.oneshot import format_approvals, format_status, format_trace_line
from tests.conftest import REPO
from tests.test_oneshot import FakeSocketClient, run
from tests.test_tui_venues import NOW, base_snapshot, venues_scenario

EXAMPLES = int(os.environ.get("COCKPIT_HOSTILE_EXAMPLES", "300"))

APPROVAL = {
    "id": "a-1",
    "strategy": "ema_cross",
    "side": "buy",
    "qty": 0.5,
    "symbol": "BTC/USDT",
    "limit_price": None,
    "ref_price": 60_000.0,
    "notional": 30_000.0,
    "expires_ts": NOW + 10**10,
    "reason": "ema crossed",
}
TRACE = [
    {"event": "decision", "ts": NOW, "seq": 1, "decision": {"strategy_id": "s", "action": "buy"}},
    {
        "event": "intent",
        "ts": NOW,
        "seq": 2,
        "intent": {"strategy_id": "s", "side": "buy", "qty": 1, "symbol": "X"},
        "outcome": "denied",
        "verdicts": [{"ok": False, "code": "MAX_NOTIONAL"}],
    },
    {"event": "order", "ts": NOW, "seq": 3, "order": {"client_order_id": "c", "reason": "r"}},
    {"event": "fill", "ts": NOW, "seq": 4, "fill": {"symbol": "X", "qty": 1}, "realized_pnl": 1},
    {"event": "approval_requested", "ts": NOW, "seq": 5, "approval": dict(APPROVAL)},
    {"event": "approval", "ts": NOW, "seq": 6, "outcome": {"approval_id": "a", "reason": "r"}},
    {"event": "safety", "ts": NOW, "seq": 7, "what": "kill", "after": {"engaged": True}},
    {"event": "breaker", "ts": NOW, "seq": 8, "change": {"breaker": "b", "tripped": True}},
    {"event": "audit", "ts": NOW, "seq": 9, "user": "u", "accepted": True},
    {"event": "other", "ts": NOW, "seq": 10, "x": 1},
]


def full_snapshot() -> dict[str, Any]:
    snap = base_snapshot(venues_scenario())
    snap["approvals"] = [dict(APPROVAL)]
    snap["trace"] = copy.deepcopy(TRACE)
    snap["kill_switch"] = {"engaged": True, "level": "halt", "by": "u", "reason": "r", "ts": 1}
    snap["breakers"] = [{"name": "b", "scope": "s", "tripped": True, "reason": "r"}]
    snap["strategies"][0].update(paused=True, paused_by="u", pause_reason="r")
    snap["blocked"] = "journal write failed"
    return snap


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value can be replaced."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


HOSTILE = st.one_of(
    st.sampled_from(
        [None, True, 0, -1, 10**30, -(10**30), 1e308, float("inf"), float("nan"), "", "x"]
    ),
    st.sampled_from([[], {}, [None], {"x": None}, [1, "a"], {"qty": "x"}]),
    st.text(max_size=5),
    st.integers(),
    st.floats(),
)
SNAPSHOT = full_snapshot()
PATHS = [(), *paths(SNAPSHOT)]


def render_all(snap: Any) -> None:
    """What status, approvals and trace print, from any snapshot."""
    assert isinstance(format_status(snap, locate=" --socket x"), str)
    if isinstance(snap, dict):
        assert isinstance(format_approvals(snap.get("approvals"), snap.get("now")), str)
        for item in snap.get("trace") if isinstance(snap.get("trace"), list) else []:
            assert isinstance(format_trace_line(item), str)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(PATHS), HOSTILE), min_size=1, max_size=3),
)
def test_status_approvals_and_trace_print_any_snapshot(edits: list[Any]) -> None:
    snap: Any = SNAPSHOT
    for path, value in edits:
        try:
            snap = replace(snap, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this place
    render_all(snap)


@pytest.mark.parametrize(
    ("command", "path", "value"),
    [
        ("status", ("positions", 0, "qty"), "1"),
        ("status", ("approvals",), 3),
        ("status", ("trading_state",), ["ACTIVE"]),
        ("status", ("portfolio", "drawdown"), "5%"),
        ("status", ("now",), 10**30),
        ("approvals", ("approvals",), {"a-1": APPROVAL}),
        ("approvals", ("approvals", 0, "expires_ts"), "soon"),
        ("approvals", ("now",), "now"),
        ("trace", ("trace", 0, "seq"), {"n": 1}),
        ("trace", ("trace", 0), "decision"),
    ],
)
def test_wrong_typed_snapshot_fields_print_without_a_traceback(
    command: str,
    path: tuple[Any, ...],
    value: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    FakeSocketClient.snap = replace(full_snapshot(), path, value)
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    code, out, err = run(capsys, command, "--socket", "/run/e.sock")
    assert code == 0, err
    assert out and err == ""


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )


BROKEN = {
    "utf16": '[engine]\ndata_dir = "d"\n'.encode("utf-16"),
    "deep": ("x = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
    "syntax": b"[engine\n",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["approvals"],
        ["trace"],
        ["venues", "check"],
        ["config", "check"],
        ["verify"],
        ["engine", "--for", "1"],
    ],
    ids=lambda a: "-".join(a),
)
def test_a_broken_config_is_one_line_and_exit_2(kind: str, argv: list[str], tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_bytes(BROKEN[kind])
    result = cli(*argv, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert str(config) in line


def test_trace_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`cockpit trace | head -1`, through a real pipe: no BrokenPipe traceback."""
    from tests.test_control_support import ThreadEngine, short_dir

    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as te:
        te.advance(3000)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = subprocess.run(
            f"{sys.executable} -m cockpit trace -n 5000 --socket {te.socket} | head -1; "
            'echo "status=${PIPESTATUS[0]}" >&2',
            shell=True,
            executable="/bin/bash",
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "status=0"


@pytest.mark.parametrize(
    "argv",
    [
        ["engine", "--data-dir", ""],
        ["verify", "--data-dir", ""],
        ["status", "--socket", ""],
        ["kill", "--reason", "x", "--config", ""],
        ["config", "check", "--config", ""],
    ],
    ids=lambda a: "-".join(x or "EMPTY" for x in a),
)
def test_an_empty_path_is_bad_usage_not_the_default(argv: list[str], tmp_path: Path) -> None:
    """`--data-dir ""` used to mean the config's data dir (and `--config ""` the default
    config): a script with an unset variable acted on another engine's files."""
    result = cli(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "empty path" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "data_dir",
    ['"a\\u0000b"', '"' + "x" * 300 + '"', "5", "[1, 2]", '""'],
    ids=["nul", "too-long", "number", "list", "empty"],
)
def test_kill_with_a_nonsense_data_dir_still_answers_in_one_line(
    data_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(f"[engine]\ndata_dir = {data_dir}\n")
    code, out, err = run(capsys, "kill", "--reason", "x", "--config", str(config))
    assert code == 3 and out == ""  # nothing found is not a success, and not a crash
    assert "no engine" in err or "not reachable" in err
    assert all(line.startswith("cockpit kill: warning:") for line in err.splitlines()[:-1])


def test_status_against_a_server_sending_deep_nesting_is_exit_3(tmp_path: Path) -> None:
    """A hostile or broken server's reply nested past the JSON parser's recursion limit was
    'cockpit: unexpected error: RecursionError' (exit 1)."""
    import socket
    import threading

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / "e.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(30)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the hello
            conn.sendall(b"[" * 200_000 + b"]" * 200_000 + b"\n")
            conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cockpit", "status", "--socket", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
