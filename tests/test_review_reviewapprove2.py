"""A second adversarial review of the approval gate as a trader uses it (reviewapprove2): the
`a`/`r` keys, `cockpit approvals`, `cockpit approve ID [--hash HASH]`, `cockpit reject`, over
the control socket with a real engine. Each test is a hole found by attacking the promise
"what is sent is what the person approved, and nothing they did not approve goes out",
failing before its fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cockpit.oneshot import build_parser, run_oneshot
from tests.test_control_support import ThreadEngine, short_dir


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


def pending(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize("given", ["", " ", "\n"])
def test_an_empty_hash_never_approves_unbound(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """`cockpit approve ID --hash "$HASH"` with $HASH empty (a failed jq, an unset variable)
    asked for an approval bound to a hash: it went out as `approve ID` alone, bound to
    nothing, and approved whatever waited under the id. Refused now, nothing decided."""
    first = pending(te, capsys)[-1]
    code, out, err = run(capsys, "approve", first["id"], "--hash", given, *sock(te))
    assert code != 0 and "approved" not in out
    assert first["id"] in {a["id"] for a in pending(te, capsys)}  # still waiting, undecided
