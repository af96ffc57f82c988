"""A config's relative ``engine.data_dir`` given from another folder.

The engine resolves a relative data_dir against the folder it starts in. A command given the
config from elsewhere (``cockpit kill --config /srv/bot/prod.toml`` typed from home) looked in
the wrong folder and missed the engine; an engine started from elsewhere began a new, empty
data directory, ACTIVE, its latched kill switch and open orders left behind in the old one.
Commands now find the data beside the config when the working folder has none, and an engine
refuses to start away from its data (no one's data moves: the working folder's still wins).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.datadir import config_data_dir, data_dir_elsewhere
from tests.test_cli_hostile import REPO, cli


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bot/ holding a config whose engine ran there once (bot/data holds its journal)."""
    bot = tmp_path_factory.mktemp("template") / "bot"
    bot.mkdir()
    (bot / "prod.toml").write_text((REPO / "config" / "default.toml").read_text())
    ran = cli("engine", "--config", "prod.toml", "--for", "1", cwd=bot)
    assert ran.returncode == 0, ran.stderr
    assert (bot / "data" / "journal.sqlite").exists()
    return bot


def _bot(tmp_path: Path, template: Path) -> tuple[Path, Path, Path]:
    """A copy of the template's bot/, and an empty home/ to type commands in."""
    bot, home = tmp_path / "bot", tmp_path / "home"
    shutil.copytree(template, bot)
    home.mkdir()
    return bot, home, bot / "prod.toml"


def test_an_engine_started_elsewhere_refuses_to_begin_a_new_data_dir(
    tmp_path: Path, ran_once: Path
) -> None:
    bot, home, config = _bot(tmp_path, ran_once)
    result = cli("engine", "--config", str(config), "--for", "1", cwd=home)
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.splitlines()
    assert "Traceback" not in line
    assert str(bot / "data") in line and str(home / "data") in line
    assert "--data-dir" in line and "absolute" in line
    assert not (home / "data").exists()  # nothing begun where the engine was not
    # Started where it ran, or pointed at its data, it starts as before.
    again = cli(
        "engine", "--config", str(config), "--data-dir", str(bot / "data"), "--for", "1", cwd=home
    )
    assert again.returncode == 0, again.stderr


def test_commands_given_the_config_from_elsewhere_reach_the_data_beside_it(
    tmp_path: Path, ran_once: Path
) -> None:
    bot, home, config = _bot(tmp_path, ran_once)
    verified = cli("verify", "--config", str(config), cwd=home)
    assert verified.returncode == 0, verified.stderr
    assert str(bot / "data" / "journal.sqlite") in verified.stdout
    # No engine runs: the kill is not delivered (exit 3), but its KILL file is where the
    # engine will look when it starts, not in a folder of the same name under home.
    killed = cli("kill", "--config", str(config), "--reason", "from home", cwd=home)
    assert killed.returncode == 3, killed.stderr
    assert (bot / "data" / "KILL").exists()
    assert not (home / "data").exists()


def test_the_working_folders_own_data_still_wins(tmp_path: Path, ran_once: Path) -> None:
    bot, home, config = _bot(tmp_path, ran_once)
    shutil.copytree(bot / "data", home / "data")  # home/data holds an engine's journal too
    verified = cli("verify", "--config", str(config), cwd=home)
    assert verified.returncode == 0, verified.stderr
    assert str(Path("data") / "journal.sqlite") in verified.stdout
    assert str(bot / "data") not in verified.stdout
    started = cli("engine", "--config", str(config), "--for", "1", cwd=home)
    assert started.returncode == 0, started.stderr


def test_what_is_taken_as_written(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "journal.sqlite").write_bytes(b"")
    config = tmp_path / "c.toml"
    # Absolute paths and no config file are taken as written; a data dir nobody used
    # anywhere is the working folder's (a new engine's), as before.
    assert config_data_dir(tmp_path / "x", config) == tmp_path / "x"
    assert config_data_dir("data", None) == Path("data")
    assert config_data_dir("nowhere", config) == Path("nowhere")
    assert data_dir_elsewhere("nowhere", config) is None
    assert data_dir_elsewhere("data", None) is None
