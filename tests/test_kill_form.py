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
