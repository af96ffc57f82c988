"""One comparison of data directories for the kill path, the one-shot commands and the socket
client. The one-shot copy fell back to ``Path.resolve()`` when ``samefile`` failed, and on a
symlink loop that raised RuntimeError out of `cockpit kill` (a traceback, the kill not sent)."""

from __future__ import annotations

import os
from pathlib import Path

from cockpit.oneshot import _names_another
from cockpit.socket_client import same_dir


def test_a_symlink_loop_is_another_dir_not_a_crash(tmp_path: Path) -> None:
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path / "b", tmp_path / "a")
    assert same_dir(tmp_path / "a", tmp_path / "b") is False  # fail closed
    assert _names_another(str(tmp_path / "a"), tmp_path / "b") == str(tmp_path / "a")


def test_the_same_dir_by_any_spelling(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "link")
    for spelling in (tmp_path / "d", tmp_path / "link", Path(f"{tmp_path}/d/")):
        assert _names_another(str(tmp_path / "d"), spelling) is None
    assert _names_another(str(tmp_path / "d"), tmp_path / "other") == str(tmp_path / "d")
    assert _names_another(None, tmp_path) is None and same_dir(tmp_path, None)
