"""review-daemon: the headless engine as an operator runs it on a server (README's `cockpit
engine` row and "How the engine works", docs/operations.md: the systemd unit, signals, the JSON
lines on stdout, attaching). The promise: it stops only when told, stops cleanly when told,
says what it does in machine-readable lines, and a person can always reach it. Each test pins a
hole found by driving the real CLI in a subprocess, failing before its fix; every wait is
bounded (tests.test_control_support.WAIT), none is a timing assertion.

Attacks that held (no test added):
- SIGINT, SIGHUP once the socket is up: exit 0, no stderr but the socket line, stdout all JSON,
  a `session ... stopped` row journaled, the socket's files removed; SIGUSR2 from outside: nothing.
- SIGTERM/SIGHUP in the interpreter's first second (before the handlers): a death by signal with
  nothing written (no journal): harmless, as test_review_ops found.
- `--for 0`, `-1`, `abc`, `1e400`, `nan`: exit 2, one line; `--for " 2"` runs 2 s.
- stdout to /dev/full, stdout and stderr closed (`>&- 2>&-`), stdout closed, stderr closed,
  `| head -c 10`: exit 0 and the journal verifies.
- Three operator clients that never read, one half-sent hello, four `cockpit status` and a
  `cockpit kill` at once: every status answered, the kill confirmed through the socket.
- The socket file removed (re-made within a second), replaced by a directory or a regular file
  (left alone; `status` exit 3, `kill --data-dir` still reaches the engine by SIGUSR1 and the
  KILL file), then put back: served again.
- Every stdout line is one JSON object (a strategy's confidence NaN was already clamped: see
  engine/strategies/base.py); the approvals' hashing refuses NaN.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_control_support import WAIT, short_dir
from tests.test_review_ops import ENV, _engine, _stop, _wait_for, where  # noqa: F401 (where: a fixture)

F_SETPIPE_SZ = 1031  # Linux


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def _full_pipe() -> tuple[int, int, int]:
    """A pipe already full (one page), as a reader that stopped reading leaves it: (read end,
    write end, bytes of filler in it)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    filled = 0
    try:
        while True:
            filled += os.write(w, b"#" * 512)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w, filled


def _drain(r: int) -> bytes:
    os.set_blocking(r, False)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


# ------------------------------------------------------------- a reader that stops reading


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_reader_that_stops_reading_never_freezes_the_engine(
    where: tuple[Path, Path],  # noqa: F811
    stream: str,
) -> None:
    """`cockpit engine | consumer` with the consumer paused (a log shipper stalled, `less` not
    scrolled, a terminal held with Ctrl-S): the pipe fills and the JSON line's write blocked the
    event loop. The engine then never opened its control socket (`cockpit status`: not
    reachable; `cockpit kill` fell back to a SIGUSR1 it could not handle), ignored SIGTERM and
    watched no exit. The lines are now written by a thread of their own; what a full pipe cannot
    take is dropped (the journal has it) and said in a `lines_dropped` line."""
    data, sock = where
    r, w, filled = _full_pipe()
    other = open(os.devnull, "w")  # noqa: SIM115
    try:
        out, err = (w, other) if stream == "stdout" else (other, w)
        proc = _engine(data, sock, stdout=out, stderr=err)
        os.close(w)
        try:
            _wait_for(sock, proc)
            status = _cli("status", "--json", "--socket", str(sock))
            assert status.returncode == 0, status.stderr
            kill = _cli("kill", "--socket", str(sock), "--reason", "pipe full")
            assert kill.returncode == 0, kill.stdout + kill.stderr
            assert json.loads(_cli("status", "--json", "--socket", str(sock)).stdout)[
                "kill_switch"
            ]["engaged"]
        finally:
            code = _stop(proc)
        assert code == 0
        text = _drain(r)[filled:].decode()
        if stream == "stdout":  # what got through is whole JSON lines
            for line in text.splitlines():
                json.loads(line)
    finally:
        other.close()
        os.close(r)


def test_a_full_pipe_drops_lines_whole_and_says_how_many() -> None:
    """The writer behind the engine's stdout: with the pipe full it never blocks its caller;
    what the queue cannot hold is dropped whole and counted, and the count is said where the
    gap is (after what was queued, before what came next), and at the close."""
    from cockpit.linesink import LineSink

    r, w, filled = _full_pipe()
    stream = os.fdopen(w, "w")
    sink = LineSink(stream, lambda n: json.dumps({"event": "lines_dropped", "lines": n}) + "\n", 3)
    stream.close()  # the sink writes to its own copy of the descriptor
    try:
        for i in range(10):  # the queue (3) and the writer (blocked) take a few; the rest drop
            sink.write(json.dumps({"n": i}) + "\n")
        deadline = time.monotonic() + WAIT
        got = b""
        while not sink._queue.empty():  # a reader that comes back: the queue empties
            assert time.monotonic() < deadline, "the writer never caught up"
            got += _drain(r)
            time.sleep(0.01)
        sink.write(json.dumps({"n": 10}) + "\n")
        sink.write(json.dumps({"n": 11}) + "\n")
        sink.close(timeout=WAIT)
        got += _drain(r)
    finally:
        os.close(r)
    lines = [json.loads(line) for line in got[filled:].decode().splitlines()]
    # Every line is there whole and in order, or counted by the notice standing where its gap
    # is (how the writes interleave with the writer thread decides how many gaps there are).
    expected = dropped = 0
    for line in lines:
        if line.get("event") == "lines_dropped":
            expected += line["lines"]
            dropped += line["lines"]
        else:
            assert line == {"n": expected}, (line, expected, lines)
            expected += 1
    assert expected == 12
    # The writer holds one line (blocked on the full pipe) and the queue three: 6 or more drop.
    assert dropped >= 6
    assert lines[-2:] == [{"n": 10}, {"n": 11}]


# ------------------------------------------------------------- a stop asked while starting


async def test_a_stop_asked_while_the_engine_starts_trades_nothing(tmp_path: Path) -> None:
    """SIGTERM (`systemctl stop`, Ctrl-C) while `cockpit engine` starts (its journal opening,
    its venues connecting) is taken by the loop's handler, which only asks the engine to stop:
    the run then processed a whole first batch (256 simulated quotes; a venue's first quotes)
    before it looked, and a strategy could trade after the stop was asked. Now nothing is."""
    from engine.journal import read_rows
    from engine.runtime import Engine
    from tests.test_control_support import approve_config

    engine = Engine(approve_config(tmp_path), tmp_path)
    await engine.start()
    try:
        engine.request_stop()  # what the SIGTERM handler does
        await engine.run()
        assert engine.quotes_processed == 0
    finally:
        await engine.stop()
    kinds = {row.kind for row in read_rows(tmp_path / "journal.sqlite")}
    assert not kinds & {"decision", "intent", "order", "fill", "approval"}


# ------------------------------------------------------------- an XDG_RUNTIME_DIR not ours


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["shared", "sticky"])
def test_a_socket_directory_inside_one_anyone_may_write_to_is_refused(
    tmp_path: Path, mode: int
) -> None:
    """XDG_RUNTIME_DIR set to a folder every user may write into (a shared folder, not the
    user's own 0700 /run/user/UID): the engine made its 0700 `cockpit/` there and served, but
    any user could rename that away and put a `cockpit/` of their own in its place: `cockpit
    status`, `attach` and `kill` then reached nothing while the engine traded on. Refused now
    before anything is written (exit 2, one line), as a data directory's parent is; a sticky
    one (as /tmp) stays allowed."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with short_dir() as sd:
        runtime = sd / "run"
        runtime.mkdir()
        os.chmod(runtime, mode)
        env = dict(ENV, XDG_RUNTIME_DIR=str(runtime))
        done = subprocess.run(
            [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data), "--for", "0.2"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if mode & 0o1000:
            assert done.returncode == 0, done.stderr
            assert (runtime / "cockpit").is_dir()
            return
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"inside {runtime}, mode 0777" in done.stderr
        assert list(data.iterdir()) == [] and list(runtime.iterdir()) == []
