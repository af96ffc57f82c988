"""Second adversarial review of bad input (configs, profiles, environment, fleet paths,
exchange answers): each test pins a hole found by attacking the promise "one clear line naming
what is wrong and how to fix it, a non-zero exit, no traceback; secrets never echoed", and
fails before its fix. Every wait is bounded.

Tried and held (no test added): numeric fields of [venues.*], [alerts], [alerts.command],
[record] and the simulated market at and past their bounds, NaN among them; typos in every
nested inline table (throttles, params, sizing, exits, the simulated market, venue options);
arrays of tables where a table goes and a table defined twice (invalid TOML, named with its
line); a config that is a directory, /dev/zero, a symlink loop, a name with a control byte;
--profile with a path or an empty name; every numeric CLI option of engine and backtest with
nan, inf, 1e400 and negatives; --param with nan, 1e400, true and a wrong type; market data
files that are compressed garbage, not UTF-8, truncated mid-row, with a crossed, NaN,
backwards or duplicate quote (rejected and counted in the report's "bad data" line); the L2
depth check (crossed, NaN, unsorted, empty side) and the live feed's catch-all around ticker and
book parsing (a huge integer is a counted bad payload, not a crash).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import engine.config as config_mod
from engine.config import ConfigError, load_config
from tests.test_cli_hostile import REPO, cli
from tests.test_review17 import write_bars_csv
from tests.test_venues_support import R, default_routes, fixture, make_broker

SECRET = "sk_live_DO_NOT_ECHO_0123456789"


# --------------------------------------------------------------------------- --profile


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("strategies = 5\n", "strategies: got 5; input should be a valid list"),
        ('strategies = "abc"\n', "strategies: got 'abc'; input should be a valid list"),
        ("strategies = { a = 1 }\n", "strategies: input should be a valid list"),
        ("risk = 5\n", "risk: got 5; input should be a valid dictionary"),
        ("safety = [1]\n", "safety: got [1]; input should be a valid dictionary"),
    ],
)
def test_a_wrong_typed_section_under_a_profile_is_refused_as_without_one(
    tmp_path: Path, text: str, expected: str
) -> None:
    """With --profile the profile's tables were merged over the config's: ``strategies = 5``
    crashed the merge (``unexpected error: TypeError``, exit 1), ``strategies = "abc"`` was read
    as three strategies named by letter, and ``risk = 5`` was silently replaced by the profile's
    table (``config check`` said ``ok``). Each is now the line it is without the profile."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    for argv in (["--config", str(path)], ["--config", str(path), "--profile", "conservative"]):
        done = cli("config", "check", *argv, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, lines
        assert lines[0].startswith(f"config error: {expected}"), lines


BROKEN_PROFILES = {
    "sizing = 5\n": "sizing: got 5; input should be a valid dictionary",
    "[sizing]\nmodel = 'fixed_fraction'\nfraction = 0.01\nbogus = 1\n": "sizing.bogus: unknown key",
    "[risk]\nmax_ordr_notional = 1\n": "risk.max_ordr_notional: unknown key",
    "[risk]\nmax_order_notional = -1\n": "risk.max_order_notional: got -1",
    "risk = 5\n": "risk: got 5; input should be a valid dictionary",
}


@pytest.mark.parametrize("text", sorted(BROKEN_PROFILES))
def test_a_broken_profile_is_refused_in_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A mistake in config/profiles/NAME.toml was reported as the config's
    (``strategies[0].sizing.bogus: unknown key``, once per strategy): the user looked for a
    field their file does not have. The line now names the profile file, once."""
    monkeypatch.setattr(config_mod, "PROFILES_DIR", tmp_path)
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(None, "broken")
    assert caught.value.problems == [
        p for p in caught.value.problems if p.startswith(f"{tmp_path / 'broken.toml'}: ")
    ]
    assert len(caught.value.problems) == 1, caught.value.problems
    assert BROKEN_PROFILES[text] in caught.value.problems[0]


def test_a_secret_in_a_profile_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_mod, "PROFILES_DIR", tmp_path)
    (tmp_path / "leaky.toml").write_text(f"[safety.kill_switch]\napi_key = '{SECRET}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(None, "leaky")
    assert SECRET not in str(caught.value)
    assert "leaky.toml: safety.kill_switch.api_key: secrets are not allowed" in str(caught.value)


def test_the_shipped_profiles_still_apply() -> None:
    for name in config_mod.profile_names():
        assert load_config(None, name).profile == name


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("value", "megabytes"),
    [("0", 0), ("2000", 2000), (" 1.5 ", 1.5), ("1000000000", 1_000_000_000), ("", None)],
)
def test_the_cache_size_variable_takes_megabytes_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch, value: str, megabytes: float | None
) -> None:
    from engine.marketdata.cache import DEFAULT_MAX_BYTES, default_max_bytes

    monkeypatch.setenv("COCKPIT_CACHE_MAX_MB", value)
    expected = DEFAULT_MAX_BYTES if megabytes is None else int(megabytes * 1e6)
    assert default_max_bytes() == expected


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "1000000001", "2G", "abc"])
def test_a_cache_size_that_is_no_size_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """``inf`` (or 1e400) crashed every command that opened the cache ("unexpected error:
    OverflowError", exit 1); ``2G`` or ``-1`` silently left the default size in force."""
    from engine.marketdata.cache import CacheSettingError, default_max_bytes

    monkeypatch.setenv("COCKPIT_CACHE_MAX_MB", value)
    with pytest.raises(CacheSettingError, match=r"^COCKPIT_CACHE_MAX_MB='.*' is not a size; set"):
        default_max_bytes()


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["data", "cache", "info"], "cockpit: "),
        (
            ["backtest", "--strategy", "ema_cross", "--data", "BARS"],
            "backtest error: market data: ",
        ),
    ],
)
def test_commands_refuse_a_cache_size_that_is_no_size_in_one_line(
    tmp_path: Path, argv: list[str], prefix: str
) -> None:
    bars = write_bars_csv(tmp_path / "bars.csv", 200)
    argv = [str(bars) if a == "BARS" else a for a in argv]
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        COCKPIT_CACHE_DIR=str(tmp_path / "cache"),
        COCKPIT_CACHE_MAX_MB="inf",
    )
    done = subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines == [
        f"{prefix}COCKPIT_CACHE_MAX_MB='inf' is not a size; set it to megabytes from 0 to "
        "1,000,000,000 (e.g. 2000) or unset it for the default 2,147 MB"
    ]


# --------------------------------------------------------------------------- exchange answers


def _permission_answers() -> list[tuple[str, str, Any, Any]]:
    """(venue, route, answer, expected (trade, withdraw)) for answers that do not state a
    permission: a field missing, null, or a string where the venue sends a boolean."""
    binance = fixture("binance", "api_restrictions")
    bybit = fixture("bybit", "query_api")
    kucoin = fixture("kucoin", "api_key")
    okx = fixture("okx", "account_config")
    out: list[tuple[str, str, Any, Any]] = []
    for value in (MISSING, None, "false", 0):
        body = {k: v for k, v in binance.items() if k != "enableWithdrawals"}
        if value is not MISSING:
            body["enableWithdrawals"] = value
        out.append(("binance", r"/sapi/v1/account/apiRestrictions", body, (True, None)))
    no_perms = {**bybit, "result": {k: v for k, v in bybit["result"].items() if k != "permissions"}}
    no_ro = {**bybit, "result": {k: v for k, v in bybit["result"].items() if k != "readOnly"}}
    out += [
        ("bybit", r"/v5/user/query-api", no_perms, (None, None)),
        ("bybit", r"/v5/user/query-api", no_ro, (None, None)),
        ("bybit", r"/v5/user/query-api", {**bybit, "result": []}, (None, None)),
        ("kucoin", r"/api/v1/user/api-key", {**kucoin, "data": {}}, (None, None)),
        ("kucoin", r"/api/v1/user/api-key", {**kucoin, "data": None}, (None, None)),
        ("okx", r"/api/v5/account/config", {**okx, "data": [{}]}, (None, None)),
        ("okx", r"/api/v5/account/config", {**okx, "data": []}, (None, None)),
        ("okx", r"/api/v5/account/config", {**okx, "data": [{"perm": 5}]}, (None, None)),
    ]
    return out


MISSING = object()


@pytest.mark.parametrize(
    ("venue", "route", "answer", "expected"),
    _permission_answers(),
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else "",
)
async def test_a_permissions_answer_that_does_not_say_is_unknown_not_cannot(
    monkeypatch: pytest.MonkeyPatch, venue: str, route: str, answer: Any, expected: Any
) -> None:
    """``cockpit venues check`` printed ``keys cannot withdraw`` (OK) when the venue's answer
    did not hold the permission at all: ``bool(None)`` is False, and a missing ``permission``
    field read as an empty set. A key that may withdraw passed the check that exists to catch
    it. An answer without the permission is now ``unknown``, never ``cannot``."""
    routes = [r for r in default_routes(venue) if r.pattern != route]
    broker, _http = make_broker(
        monkeypatch, venue, testnet=False, routes=[*routes, R("GET", route, answer)]
    )
    try:
        perms = await broker.key_permissions()
    finally:
        await broker.close()
    assert (perms["trade"], perms["withdraw"]) == expected, perms


@pytest.mark.parametrize("venue", ["binance", "bybit", "kucoin", "okx"])
async def test_the_recorded_permissions_answers_still_say_trade_and_no_withdraw(
    monkeypatch: pytest.MonkeyPatch, venue: str
) -> None:
    broker, _http = make_broker(monkeypatch, venue, testnet=False)
    try:
        perms = await broker.key_permissions()
    finally:
        await broker.close()
    assert (perms["trade"], perms["withdraw"]) == (True, False), perms


@pytest.mark.parametrize("kind", ["relative", "a file"])
def test_an_invalid_runtime_dir_is_ignored_by_engine_and_clients_alike(
    tmp_path: Path, kind: str
) -> None:
    """``XDG_RUNTIME_DIR=run`` (relative) put the socket under the engine's working directory,
    where ``cockpit status`` started elsewhere never looked; naming a file ended the engine in
    'unexpected error: NotADirectoryError' (exit 1). The XDG spec says an invalid value is
    ignored: both now use the data directory's socket."""
    from engine.control import default_socket_path

    (tmp_path / "notes.txt").write_text("not a directory\n")
    runtime = "run" if kind == "relative" else str(tmp_path / "notes.txt")
    data = tmp_path / "data"
    assert default_socket_path(data, env={"XDG_RUNTIME_DIR": runtime}) == data / "cockpit.sock"
    assert default_socket_path(data, env={"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        tmp_path / "cockpit" / "default.sock"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_RUNTIME_DIR=runtime)
    done = subprocess.run(
        [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data), "--for", "0.5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"control socket: {data / 'cockpit.sock'}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- true/false fields


@pytest.mark.parametrize("value", ['"yes"', '"no"', '"false"', "1", "0", '"on"'])
def test_a_true_false_field_takes_only_true_or_false(tmp_path: Path, value: str) -> None:
    """pydantic's lax mode read ``testnet = "no"`` as false (a live venue), ``enabled = 1`` or
    ``"yes"`` as true: config check said ``ok`` to a guess. Only true and false pass now."""
    path = tmp_path / "c.toml"
    shown = repr(value.strip('"')) if value.startswith('"') else value
    for key in ("enabled", "trades"):
        path.write_text(f"[record]\n{key} = {value}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.problems == [
            f"record.{key}: got {shown}; must be true or false (without quotes)"
        ]
    for ok in ("true", "false"):  # the two booleans pass (`enabled = true` needs a venue
        path.write_text(f"[record]\ntrades = {ok}\n")  # feed: tests/test_recording_live.py)
        assert load_config(path).record.trades is (ok == "true")


# --------------------------------------------------------------------------- keys as names

BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BYBIT_KEY = "XGm2YbQ7tPz1NvL9Ka"


@pytest.mark.parametrize("argv", [["config", "check"], ["engine", "--for", "1"]])
def test_a_key_of_letters_and_digits_written_as_a_variable_name_is_never_echoed(
    tmp_path: Path, argv: list[str]
) -> None:
    """A binance key (64 letters and digits) or a bybit key (18) is a valid variable name to
    the pattern, so config check said ``ok`` and the testnet engine printed ``environment
    variable <the key> is not set``: the key, on stderr. Such a value is refused unseen."""
    path = tmp_path / "c.toml"
    path.write_text(
        f'[engine]\nmode = "testnet"\ndata_dir = "{tmp_path / "d"}"\n'
        '[[strategies]]\nid = "e"\nkind = "ema_cross"\n'
        'symbols = ["BTC/USDT"]\nparams = { fast = 5, slow = 20 }\n'
        f'[venues.binance]\nexchange = "binance"\napi_key_env = "{BINANCE_KEY}"\n'
        f'secret_env = "{BYBIT_KEY}"\n'
    )
    done = cli(*argv, "--config", str(path), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    out = done.stdout + done.stderr
    assert BINANCE_KEY not in out and BYBIT_KEY not in out, out
    assert "venues.binance.api_key_env: looks like a key" in out, out
    assert "venues.binance.secret_env: looks like a key" in out, out


KEY_EXAMPLES = int(os.environ.get("COCKPIT_KEY_NAME_EXAMPLES", "200"))
BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@settings(max_examples=KEY_EXAMPLES, deadline=None)
@given(st.text(alphabet=BASE62, min_size=64, max_size=64))
def test_every_binance_shaped_key_reads_as_a_key(key: str) -> None:
    assume(any(c.isdigit() for c in key) and any(c.isalpha() for c in key))
    assert config_mod.looks_like_a_key(key)


@pytest.mark.parametrize(
    "name",
    [
        "BINANCE_API_KEY",
        "COCKPIT_ALERT_URL",
        "BinanceTestnetApiKey",
        "binanceTestnetKey2",
        "BYBITKEY1234567890",
        "KEY2",
    ],
)
def test_conventional_variable_names_are_names(name: str) -> None:
    assert not config_mod.looks_like_a_key(name)


# --------------------------------------------------------------------------- fleet paths

NO_USER = "~cockpit-no-such-user-4f9a"


def test_a_fleet_path_under_an_unknown_users_home_is_one_line_exit_2(tmp_path: Path) -> None:
    """``socket = "~nosuchuser/e.sock"`` in a fleet file, or ``--fleet``/``--socket``/
    ``--data-dir`` given so, ended ``cockpit kill --all`` and ``cockpit attach`` in
    'unexpected error: RuntimeError: Could not determine home directory' (exit 1)."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[engines.a]\nsocket = "{NO_USER}/e.sock"\n')
    cases = [
        (["kill", "--all", "--fleet", str(fleet), "--reason", "r"], "engines.a.socket: cannot"),
        (["attach", "--fleet", f"{NO_USER}/f.toml"], "--fleet: cannot expand"),
        (["attach", "--socket", f"{NO_USER}/a.sock", "--socket", "b.sock"], "--socket: cannot"),
        (["attach", "--data-dir", f"{NO_USER}/d", "--data-dir", "d2"], "--data-dir: cannot"),
    ]
    for argv, expected in cases:
        done = cli(*argv, cwd=tmp_path)
        (line,) = done.stderr.strip().splitlines()
        assert done.returncode == 2 and expected in line, (argv, line)
        assert "give the path in full" in line and "unexpected" not in line, line
