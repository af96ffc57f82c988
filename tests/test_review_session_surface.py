"""Review of the day's changes outside the engine core, taken as a whole (review-diff-b).

Attacks that held:
- `main(["engine", ...])` run in-process: SIGUSR1's disposition after it returns is what it was.
- A control socket path replaced by a regular file, a FIFO or a symlink while the engine runs:
  left alone (the guard serves only a path that is gone).
- The socket's directory re-made by someone else: `check_private_dir` refuses it, nothing bound.
- A second engine on a removed socket's path: the lock decides; the first leaves it alone.
- `--data-dir` relative, under sticky /tmp, or in a group-writable home: accepted.
- `allow_short = true` in testnet refused by `config check` with the field named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.datadir import DataDirUnsafe, check_own_dir


def _tree(root: Path, mode: int) -> tuple[Path, Path]:
    shared = root / "shared"
    shared.mkdir()
    home = shared / "alice"
    home.mkdir(mode=0o755)
    data = home / "data"
    data.mkdir(mode=0o700)
    shared.chmod(mode)
    return shared, data


@pytest.mark.parametrize(("mode", "refused"), [(0o777, True), (0o1777, False), (0o775, False)])
def test_a_data_dir_below_a_directory_anyone_may_write_is_refused(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    """docs/operations.md: a data directory inside a directory every user may write into is
    refused. Only the immediate parent was looked at: in /shared (0777)/alice/data anyone may
    rename /shared/alice away and put another alice (with an older data) in its place."""
    shared, data = _tree(tmp_path, mode)
    try:
        if refused:
            with pytest.raises(DataDirUnsafe, match=str(shared)):
                check_own_dir(data)
        else:
            check_own_dir(data)
    finally:
        shared.chmod(0o755)


def test_a_data_dir_reached_through_a_link_anyone_may_replace_is_refused(tmp_path: Path) -> None:
    """`--data-dir /shared/link` where link -> ~/data: the real path's parents are private, but
    anyone may replace the link in /shared (0777) with one to another data directory."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    data = home / "data"
    data.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "link").symlink_to(data)
    shared.chmod(0o777)
    try:
        with pytest.raises(DataDirUnsafe, match=str(shared)):
            check_own_dir(shared / "link")
        check_own_dir(data)  # the same directory named by its own path
    finally:
        shared.chmod(0o755)


def test_relative_data_dir_in_a_private_cwd_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    os.chmod(tmp_path, 0o770)  # group-write is the owner's choice
    monkeypatch.chdir(tmp_path)
    check_own_dir(Path("data"))
