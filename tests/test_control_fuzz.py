"""Random bytes and random JSON at the control socket: every answer is a protocol line, the
engine keeps running, nothing in its safety state moves, and its journal stays intact."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.journal import verify_journal
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


def exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send, half-close, read every answer until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
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
