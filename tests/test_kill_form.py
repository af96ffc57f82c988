"""A kill is never refused for its form, as the KILL file is not: a script's upper-case level,
a trailing space, a null, a word that is no level or a misspelt key was refused in one line
and nothing engaged, while the trader believed the engine stopped. A level in any case is that
level; anything else that is no level engages halt (the reply says so); other keys are ignored
and named in the reply."""

from __future__ import annotations

from typing import Any

import pytest

from engine.commands import CommandError, parse_command


@pytest.mark.parametrize(
    ("args", "level", "note"),
    [
        ({"level": "flatten", "reason": "r"}, "flatten", ""),
        ({"level": "FLATTEN"}, "flatten", ""),
        ({"level": " Entries\n"}, "entries", ""),
        ({}, "halt", ""),
        ({"level": None}, "halt", ""),
        (None, "halt", ""),
        ([1, 2], "halt", ""),
        ({"level": "flaten"}, "halt", "'flaten' is not entries, halt or flatten: halt engaged"),
        ({"level": 3}, "halt", "'3' is not entries, halt or flatten: halt engaged"),
        ({"level": "halt", "reasn": "oops"}, "halt", "ignored: reasn"),
        ({"level": "entries", "note": "forged"}, "entries", "ignored: note"),
    ],
)
def test_a_kill_in_any_form_engages(args: Any, level: str, note: str) -> None:
    kill = parse_command("kill", args)
    assert kill.level == level  # type: ignore[attr-defined]
    assert note in kill.note and (note or not kill.note)  # type: ignore[attr-defined]


def test_a_wrong_level_word_is_shown_cut_and_on_one_line() -> None:
    kill = parse_command("kill", {"level": "x\n" * 100})
    note = kill.note  # type: ignore[attr-defined]
    assert "\n" not in note and len(note) < 120 and kill.level == "halt"  # type: ignore[attr-defined]


def test_other_commands_stay_strict() -> None:
    with pytest.raises(CommandError, match="arguments must be an object"):
        parse_command("pause", None)  # type: ignore[arg-type]
    with pytest.raises(CommandError):
        parse_command("release", {"reason": "r", "confirm": "RELEASE", "reasn": "x"})


def test_the_cli_takes_a_level_in_any_case() -> None:
    from cockpit.cli import build_parser

    assert build_parser().parse_args(["kill", "--level", "FLATTEN"]).level == "flatten"


@pytest.mark.parametrize("typed", ["flaten", "nuke", "halt now", "3"])
def test_a_cli_level_that_is_no_level_engages_halt_and_says_so(
    typed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit kill --level flaten`, typed in a hurry, was refused by the parser (exit 2) and
    nothing engaged, while the engine over its socket and the KILL file engage halt on any
    word. It engages halt now, and exits 1 saying so: not the level asked (positions stay
    open), so the person runs it again with the level meant."""
    from cockpit import oneshot
    from tests.test_oneshot import FakeSocketClient, run

    FakeSocketClient.reply = {"ok": True, "message": "kill switch engaged: halt"}
    FakeSocketClient.made = []
    monkeypatch.setattr(FakeSocketClient, "instance", "run-1", raising=False)
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    code, out, err = run(capsys, "kill", "--level", typed, "--socket", "/run/e.sock")
    [client] = FakeSocketClient.made
    assert client.commands == [("kill", {"level": "halt", "reason": ""})]
    assert code == 1
    assert "kill switch engaged: halt" in out
    (line,) = err.strip().splitlines()
    assert f"{typed!r} is no kill level (entries, halt, flatten): halt was asked instead" in line


@pytest.mark.parametrize("typed", ["entries", "halt", "flatten"])
def test_a_cli_level_that_is_a_level_is_sent_as_typed(
    typed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cockpit import oneshot
    from tests.test_oneshot import FakeSocketClient, run

    FakeSocketClient.reply = {"ok": True, "message": f"kill switch engaged: {typed}"}
    FakeSocketClient.made = []
    monkeypatch.setattr(FakeSocketClient, "instance", "run-1", raising=False)
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    code, _, err = run(capsys, "kill", "--level", typed.upper(), "--socket", "/run/e.sock")
    assert FakeSocketClient.made[0].commands == [("kill", {"level": typed, "reason": ""})]
    assert code == 0 and err == ""
