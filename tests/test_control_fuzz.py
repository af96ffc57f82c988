"""Random bytes and random JSON at the control socket: every answer is a protocol line, the
engine keeps running, nothing in its safety state moves, and its journal stays intact."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.commands import COMMANDS
from engine.control import MAX_DEPTH, MAX_LINE, MAX_NUMBER_CHARS
from engine.journal import verify_journal
from tests.conftest import REPO
from tests.test_control_support import WAIT, ThreadEngine, short_dir

ANSWERS = {"welcome", "snapshot", "event", "reply", "error", "pong"}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["type", "version", "role", "name", "resume_from", "id", "args", "trace", "curve", "x"]
)
messages = st.dictionaries(field_names, json_values, max_size=6) | st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "command", "snapshot", "ping", "welcome", ""])},
    optional={
        "version": st.integers(-2, 3) | json_values,
        "role": st.sampled_from(["viewer", "operator", "root"]) | json_values,
        "name": st.text(max_size=70) | json_values,
        "resume_from": st.integers(-5, 10**6) | json_values,
        "subscribe": st.just(False) | json_values,
        "id": st.text(max_size=10) | json_values,
        # Command names are random text: a valid kill could only come out by sheer chance.
        "args": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "trace": st.integers(-5, 50) | json_values,
        "curve": st.integers(-5, 50) | json_values,
    },
)


def exchange(path: Path, payload: bytes, closes: bool = False) -> list[dict[str, Any]]:
    """Send, half-close, read every answer until the server closes. ``closes``: the payload
    ends with a line the server closes on, maybe before it has all been sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(str(path))
        data = b""
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(1 << 20):
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            if not closes:
                raise
            with contextlib.suppress(OSError):
                while chunk := s.recv(1 << 20):
                    data += chunk
    answers = [json.loads(line) for line in data.splitlines()]
    for a in answers:
        assert a.get("type") in ANSWERS, a
        if a["type"] == "error":
            assert "server error" not in a["message"], a
            assert "\n" not in a["message"]
    return answers


def test_random_bytes_and_json_never_disturb_the_engine(tmp_path: Path) -> None:
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock", speed=20.0) as te:
        assert te.engine is not None and te.server is not None
        engine, path = te.engine, te.server.path
        safety_before = te.call(lambda: engine.core.safety.state.to_dict())

        @FUZZ
        @given(payload=st.binary(max_size=3000))
        def random_bytes(payload: bytes) -> None:
            exchange(path, payload)

        @FUZZ
        @given(
            msgs=st.lists(messages, min_size=1, max_size=4),
            role=st.sampled_from(["viewer", "operator"]),
        )
        def random_json(msgs: list[dict[str, Any]], role: str) -> None:
            hello = {"type": "hello", "version": 1, "role": role, "name": "fuzz"}
            lines = [json.dumps({**hello, "subscribe": False})] + [json.dumps(m) for m in msgs]
            answers = exchange(path, "\n".join(lines).encode() + b"\n")
            assert answers[0]["type"] == "welcome"

        @FUZZ
        @given(msgs=st.lists(json_values, min_size=1, max_size=4))
        def random_json_without_hello(msgs: list[Any]) -> None:
            answers = exchange(path, b"\n".join(json.dumps(m).encode() for m in msgs) + b"\n")
            assert all(a["type"] == "error" for a in answers)

        random_bytes()
        random_json()
        random_json_without_hello()

        assert te.call(lambda: not engine.stopping)
        assert te.call(lambda: engine.core.safety.state.to_dict()) == safety_before
        # Still running: more quotes keep arriving after the barrage.
        quotes = te.call(lambda: engine.quotes_processed)
        deadline = time.monotonic() + WAIT
        while te.call(lambda: engine.quotes_processed) == quotes:
            assert time.monotonic() < deadline, "the engine stopped processing quotes"
            time.sleep(0.01)
        journal = engine.journal_path
    report = verify_journal(journal)
    assert report.ok, report.problem


# --------------------------------------------------------------------------- seeded barrage

FUZZ_INPUTS = int(os.environ.get("COCKPIT_FUZZ_INPUTS", "10000"))
FUZZ_SEED = int(os.environ.get("COCKPIT_FUZZ_SEED", "11"))
PER_CONNECTION = 50
COMMAND_NAMES = sorted(COMMANDS)
OPERATOR_NAMES = [name for name in COMMAND_NAMES if name != "kill"]
VALID_ARGS: dict[str, dict[str, Any]] = {
    "kill": {"level": "halt", "reason": "fuzz"},
    "release": {"reason": "fuzz", "confirm": "RELEASE"},
    "pause": {"strategy": "trend", "reason": "fuzz"},
    "flatten": {"reason": "fuzz"},
    "set-limit": {"name": "max_order_notional", "value": 1.0, "reason": "fuzz"},
}
UNICODE = ["\u0000", "\u202e", "\ufeff", "\U0001f4a5", "é", "\u200b", "\\ud800", "Ω" * 50]


class Hostile:
    """A seeded generator of lines no well-behaved client sends. ``line()`` returns the bytes
    of one input and whether the server may close the connection after it (then it goes last).
    Operators only ever send commands their arguments make invalid (an extra field): whatever
    else happens, no fuzz input may legitimately change the engine's safety state."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.kinds = [
            self.garbage,
            self.truncated,
            self.deep,
            self.wrong_types,
            self.wrong_command,
            self.viewer_command,
            self.unicode,
            self.numbers,
            self.snapshot,
            self.hello_again,
        ]

    def line(self, role: str) -> tuple[bytes, bool]:
        r = self.rng.random()
        if r < 0.004:
            return b"x" * (MAX_LINE + self.rng.randrange(1, 5000)) + b"\n", True
        if r < 0.008:
            return _json({"type": "hello", "version": self.rng.choice([0, 2, 99])}), False
        kind = self.rng.choice(self.kinds)
        if kind == self.viewer_command and role != "viewer":
            kind = self.wrong_command
        data = kind()
        return data, len(data) > MAX_LINE  # too long to frame: the server closes after it

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        pick = rng.randrange(9 if depth < 3 else 6)
        return [
            lambda: None,
            lambda: rng.random() < 0.5,
            lambda: rng.randrange(-(10**30), 10**30),
            lambda: rng.uniform(-1e300, 1e300),
            lambda: "".join(rng.choice([*UNICODE, "a", "b", " "]) for _ in range(rng.randrange(8))),
            lambda: rng.choice([*COMMAND_NAMES, "", "kill ", "KILL"]),
            lambda: [self.value(depth + 1) for _ in range(rng.randrange(4))],
            lambda: {self.key(): self.value(depth + 1) for _ in range(rng.randrange(4))},
            lambda: {"type": rng.choice(["hello", "command", "snapshot", "ping"])},
        ][pick]()

    def key(self) -> str:
        return self.rng.choice(["type", "id", "name", "args", "trace", "curve", "role", "x", ""])

    def garbage(self) -> bytes:
        n = self.rng.randrange(0, 300)
        return bytes(self.rng.randrange(256) for _ in range(n)).replace(b"\n", b"") + b"\n"

    def truncated(self) -> bytes:
        full = _json(self.message())[:-1]
        return full[: self.rng.randrange(len(full))] + b"\n"

    def deep(self) -> bytes:
        n = self.rng.choice([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 500, 990, 5000, 20000])
        open_, close = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        body = open_ * n + b"1" + close * n
        return b'{"type":"command","id":"d","name":"pause","args":{"x":' + body + b"}}\n"

    def message(self) -> dict[str, Any]:
        msg = {"type": self.rng.choice(["hello", "command", "snapshot", "ping", "event", ""])}
        for _ in range(self.rng.randrange(5)):
            msg[self.key()] = self.value()
        return msg

    def wrong_types(self) -> bytes:
        return _json(self.message())

    def wrong_command(self) -> bytes:
        # Not "kill": a kill is never refused for its form (tests/test_kill_form.py), so one
        # with an extra field engages, as it must.
        name = self.rng.choice([*OPERATOR_NAMES, "nope", "", "KILL"])
        args = dict(VALID_ARGS.get(name, {}))
        for _ in range(self.rng.randrange(3)):
            args[self.key()] = self.value()
        args["fuzz_extra"] = self.value()  # never valid: the models forbid unknown fields
        key = self.rng.choice([str(self.rng.randrange(10**6)), "same", "x" * 128])
        return _json({"type": "command", "id": key, "name": name, "args": args})

    def viewer_command(self) -> bytes:
        name = self.rng.choice(sorted(VALID_ARGS))
        return _json(
            {
                "type": "command",
                "id": f"v{self.rng.random()}",
                "name": name,
                "args": VALID_ARGS[name],
            }
        )

    def unicode(self) -> bytes:
        text = "".join(self.rng.choice(UNICODE) for _ in range(self.rng.randrange(1, 20)))
        raw = json.dumps({"type": "command", "id": text, "name": text, "args": {text: text}})
        data = raw.encode("utf-8", "surrogatepass")
        if self.rng.random() < 0.3:
            data += bytes([self.rng.choice([0x80, 0xC0, 0xFF, 0xED])])  # not UTF-8
        return data + b"\n"

    def numbers(self) -> bytes:
        digits = self.rng.choice([1, 99, MAX_NUMBER_CHARS, MAX_NUMBER_CHARS + 1, 4301, 20000])
        number = self.rng.choice(
            [
                b"9" * digits,
                b"-" + b"9" * digits,
                b"1e" + b"9" * min(digits, 400),
                b"1e999",
                b"0." + b"1" * digits,
                b"-0",
                b"1E-400",
            ]
        )
        field = self.rng.choice([b"trace", b"curve", b"x"])
        return b'{"type":"snapshot","' + field + b'":' + number + b"}\n"

    def snapshot(self) -> bytes:
        msg: dict[str, Any] = {"type": "snapshot"}
        for field in ("trace", "curve"):
            if self.rng.random() < 0.7:
                msg[field] = self.rng.choice([0, 1, 500, 100_000, 1_000_000, -1, 10**9])
        return _json(msg)

    def hello_again(self) -> bytes:
        return _json({"type": "hello", "version": 1, "role": "operator", "name": "again"})


def _json(msg: Any) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def _rss_mb() -> float:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_ten_thousand_hostile_inputs_leave_the_engine_trading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """COCKPIT_FUZZ_INPUTS=100000 for a longer run (COCKPIT_FUZZ_SEED for another barrage)."""
    gen = Hostile(FUZZ_SEED)
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock", speed=20.0) as te:
        assert te.engine is not None and te.server is not None
        engine, server, path = te.engine, te.server, te.server.path
        safety_before = te.call(lambda: engine.core.safety.state.to_dict())
        rss_before = _rss_mb()
        sent = answered = 0
        while sent < FUZZ_INPUTS:
            role = gen.rng.choice(["viewer", "operator"])
            hello = {"type": "hello", "version": 1, "role": role, "name": "fuzz"}
            hello["subscribe"] = gen.rng.random() < 0.1
            lines = [_json(hello)]
            closes = False
            for _ in range(min(PER_CONNECTION, FUZZ_INPUTS - sent)):
                line, closes = gen.line(role)
                lines.append(line)
                sent += 1
                if closes:
                    break
            answers = exchange(path, b"".join(lines), closes)
            answered += sum(a["type"] in ("error", "reply", "pong", "snapshot") for a in answers)
        # Every input was read and answered (blank ones, and a few after a fatal line, aside).
        assert answered > 0.95 * FUZZ_INPUTS, (answered, FUZZ_INPUTS)
        # The engine is alive and trading, nothing moved its safety state, memory is bounded.
        assert te.call(lambda: not engine.stopping)
        assert te.call(lambda: engine.core.safety.state.to_dict()) == safety_before
        quotes = te.call(lambda: engine.quotes_processed)
        deadline = time.monotonic() + WAIT
        while te.call(lambda: engine.quotes_processed) == quotes:
            assert time.monotonic() < deadline, "the engine stopped processing quotes"
            time.sleep(0.01)
        assert _rss_mb() - rss_before < 150
        status = subprocess.run(
            [sys.executable, "-m", "cockpit.oneshot", "status", "--socket", str(path), "--json"],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["kill_switch"]["engaged"] is False
        assert te.call(lambda: not server.clients and not server._handlers)
        journal = engine.journal_path
    assert verify_journal(journal).ok
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems[:5]]
