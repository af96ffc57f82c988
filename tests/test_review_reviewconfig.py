"""review-reviewconfig: the configuration a trader writes (config/default.toml, the profiles,
the arming of testnet and live), attacked as a hostile checker would. Each test pins a hole found
there, failing before its fix.

Attacks that held (no test added unless named):
- every numeric limit of [risk], [safety.*], [portfolio], [engine] and [market.validation] at
  nan, inf, -inf, -1, 0, 1e300 and 2**70 (TOML's nan/inf too): refused by name, but for
  cooldown_s = 0 (now refused) and the counts where 0 is documented (canary_trades: no
  canary; auto_after_approved);
- quoted numbers and true/false in number fields, a float canary_trades, a TOML date or time
  where a number or a path goes, a 100-digit seed: one line each, exit 2;
- TOML's own edges through `config check`: a directory, a FIFO, binary, UTF-16, a BOM, an empty
  file (the defaults), CRLF line ends (read as LF), duplicate tables and keys, dotted keys
  redefining a table ([safety] breakers.x beside [safety.breakers]), [[risk]], a venue given as
  a string or an array of tables: refused in one line or read as TOML means;
- `profile = ...` in a config, `--profile` with an unknown name, a path (../../etc/passwd), an
  empty or spaced word, another case (Conservative): refused, nothing outside config/profiles
  read; conservative over default.toml is never looser (tests/test_review_ap.py);
- a testnet config with testnet = false, a live one with testnet = true (default): refused by
  `config check` as by the engine; --live on a paper or testnet config; okx without its
  password variable: one line, exit 2, before any venue is opened;
- an API key or secret with a space, \r or control character: refused by arming, never shown;
- strategy params (typos, quoted numbers, fast >= slow, nan limit_ttl_s), a symbol listed twice
  by one strategy, a symbol claimed by two venues or by none: refused as the engine does;
- unicode look-alikes in a strategy id (GLOBAL in full width, a Cyrillic a): refused by the id's
  characters;
- the alert URL in urls_env holding a token apprise refuses: named by variable, never shown;
- the default config with its commented [record], exits and limit-order lines uncommented, and
  the README's testnet example as written: `config check` ok;
- the canary count across a restart at N and N+1
  (test_the_canary_count_outlives_a_restart_at_its_boundary): counted from the journal,
  approved orders included.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cockpit.cli import main
from engine.breakers import BreakerBoard
from engine.config import ConfigError, ThrottleConfig, parse_config
from engine.throttle import OrderThrottle
from engine.types import NS_PER_SECOND
from tests.conftest import default_dict, merge

T0 = 1_700_000_000 * NS_PER_SECOND


def check(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    """`cockpit config check --config PATH`: exit code, stdout, stderr."""
    code = main(["config", "check", "--config", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def one_refusal(code: int, out: str, err: str, *words: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr that names each of ``words``."""
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


# --------------------------------------------------------------------- windows and cooldown


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("[risk]\nstrategy_throttle = {{ max_orders = 1, per_seconds = {v} }}\n", "per_seconds"),
        ("[risk]\nglobal_throttle = {{ max_orders = 1, per_seconds = {v} }}\n", "per_seconds"),
        (
            "[safety.breakers]\nrolling_loss = {{ max_loss_pct = 1, window_s = {v} }}\n",
            "rolling_loss.window_s",
        ),
        ('[safety.breakers]\nrearm = "auto"\ncooldown_s = {v}\n', "cooldown_s"),
        (
            '[[strategies]]\nid = "a"\nkind = "ema_cross"\nsymbols = ["BTC/USDT"]\n'
            'breakers = {{ rearm = "auto", cooldown_s = {v} }}\n',
            "strategies[0].breakers.cooldown_s",
        ),
    ],
    ids=["strategy_throttle", "global_throttle", "rolling_loss", "cooldown", "strategy_cooldown"],
)
def test_a_window_too_short_to_hold_anything_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, field: str
) -> None:
    """`per_seconds = 1e-10` rounds to a 0 ns window: the throttle counted no order ever (no
    throttle), and `config check` said ok; a rolling loss in a 0 ns window never lost; `rearm =
    "auto"` with `cooldown_s = 0` re-armed a breaker (the engine-wide loss halt too) on the tick
    that tripped it. A window or cooldown is at least a second: just under is refused by name,
    a second is accepted."""
    for bad in ("1e-10", "0.999", "0"):
        path = tmp_path / "bad.toml"
        path.write_text(f'[engine]\ndata_dir = "{tmp_path}/d"\n' + section.format(v=bad))
        one_refusal(*check(capsys, path), field, "greater than or equal to 1")
    path = tmp_path / "ok.toml"
    path.write_text(f'[engine]\ndata_dir = "{tmp_path}/d"\n' + section.format(v="1"))
    assert check(capsys, path) == (0, "ok\n", "")


def test_what_a_second_long_window_still_holds() -> None:
    """At the bound the limits are limits: a one-second throttle counts the orders of that
    second, and a one-second cooldown keeps a tripped engine-wide breaker tripped until then."""
    one = ThrottleConfig(max_orders=1, per_seconds=1)
    throttle = OrderThrottle(one, one)
    for _ in range(3):
        throttle.record("a", T0)
    assert throttle.strategy_count("a", T0 + NS_PER_SECOND - 1) == 3
    breakers = {"global_consecutive_losses": 1, "rearm": "auto", "cooldown_s": 1}
    cfg = parse_config(merge(default_dict(), {"safety": {"breakers": breakers}}))
    board = BreakerBoard(cfg)
    tripped = board.on_round_trip("ema_cross", -1.0, 100_000.0, T0)
    assert any(c.scope == "global" for c in tripped)
    assert board.on_clock(T0) == []  # not re-armed on the tick that tripped it
    assert board.on_clock(T0 + NS_PER_SECOND - 1) == []
    rearmed = board.on_clock(T0 + NS_PER_SECOND)  # re-armed after its second
    assert any(c.scope == "global" and not c.tripped for c in rearmed)


# --------------------------------------------------------------------------- the kill file


def test_cockpit_kill_never_writes_its_level_over_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit kill --level flatten --config C` with no engine answering writes the level into
    the KILL file the config names: C's `kill_file = "journal.sqlite"` (a name `config check`
    refuses, read here from the raw file) had the journal replaced by the line "flatten", every
    position, order and hash of the data dir gone. The name is refused there too: the level goes
    to KILL, with a warning that says why."""
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    data = tmp_path / "data"
    data.mkdir()
    journal = data / "journal.sqlite"
    held = b"SQLite format 3\x00" + bytes(range(256)) * 8
    journal.write_bytes(held)
    for name in ("journal.sqlite", "Journal.sqlite", "journal.sqlite-wal", "engine.lock"):
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[engine]\ndata_dir = "{data}"\n[safety.kill_switch]\nkill_file = "{name}"\n'
        )
        code = main(["kill", "--level", "flatten", "--config", str(cfg)])
        out, err = capsys.readouterr()
        assert code == 3, (out, err)  # no engine answers: the file is for the next start
        assert f"kill_file {name!r}: names one of the engine's own files" in err
        assert "Traceback" not in err
        assert journal.read_bytes() == held
        assert (data / "KILL").read_text() == "flatten\n"
        assert not (data / "journal.sqlite-wal").exists()
        (data / "KILL").unlink()


@pytest.mark.parametrize(
    "name",
    ["Journal.sqlite", "JOURNAL.SQLITE-wal", "Engine.lock", "Record", "MARKET", "Cockpit.sock"],
)
def test_a_kill_file_naming_an_engine_file_in_another_case_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """On a file system that ignores case (macOS, Windows, ext4 with casefold) `Journal.sqlite`
    is the journal and `Record` the recordings' folder: `kill_file = "Journal.sqlite"` passed
    `config check`, and the engine's atomic KILL write would have replaced the journal. Refused
    in any case, as in lower case; `Kill` (no engine file) is accepted."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[engine]\ndata_dir = "{tmp_path}/d"\n[safety.kill_switch]\nkill_file = "{name}"\n'
    )
    one_refusal(*check(capsys, cfg), "kill_file", "engine's own files", "use another name")
    cfg.write_text(
        f'[engine]\ndata_dir = "{tmp_path}/d"\n[safety.kill_switch]\nkill_file = "Kill"\n'
    )
    assert check(capsys, cfg) == (0, "ok\n", "")


# ------------------------------------------------------------------------- strategy ids


def _strategies(*ids: str) -> str:
    return "".join(
        f'[[strategies]]\nid = "{i}"\nkind = "ema_cross"\nsymbols = ["BTC/USDT"]\n' for i in ids
    )


@pytest.mark.parametrize(
    ("ids", "words"),
    [
        (("Global",), ("strategies[0].id", "'Global' is the engine's own name", "another id")),
        (("OPERATOR",), ("strategies[0].id", "'OPERATOR' is the engine's own name")),
        (("ema", "EMA"), ("unique, also ignoring case", "EMA, ema")),
        (("-x",), ("strategies[0].id", "not starting with -", "cockpit pause")),
    ],
)
def test_a_strategy_id_the_operator_cannot_tell_apart_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ids: tuple[str, ...], words: tuple[str, ...]
) -> None:
    """`global` and `operator` were refused but `Global` and `OPERATOR` passed: a strategy row
    "Global" beside the engine-wide "global" in the breakers list, where `cockpit rearm global`
    typed for the strategy re-arms the engine's loss halt. "ema" and "EMA" were two strategies
    that read as one in every pane and alert. "-x" was a strategy `cockpit pause -x` could not
    name (argparse took it for an option). Each is refused in one line."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[engine]\ndata_dir = "{tmp_path}/d"\n' + _strategies(*ids))
    one_refusal(*check(capsys, cfg), *words)


def test_ids_that_differ_in_more_than_case_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[engine]\ndata_dir = "{tmp_path}/d"\n' + _strategies("ema", "ema2", "_x", "."))
    assert check(capsys, cfg) == (0, "ok\n", "")


def test_two_venue_names_that_differ_only_in_case_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[venues.Binance]` beside `[venues.binance]`: where the file system ignores case their
    recordings share DATA/record/binance (one hash chain broken by the other), and `cockpit
    resolve binance` reads as either. Refused by name."""
    cfg = tmp_path / "c.toml"
    venues = "".join(
        f'[venues.{n}]\nexchange = "binance"\nsymbols = ["{s}"]\n'
        for n, s in (("Binance", "BTC/USDT"), ("binance", "ETH/USDT"))
    )
    body = f'[engine]\ndata_dir = "{tmp_path}/d"\n[market]\nsource = "venue"\n' + venues
    body += '[[strategies]]\nid = "a"\nkind = "ema_cross"\nsymbols = ["BTC/USDT", "ETH/USDT"]\n'
    cfg.write_text(body)
    one_refusal(*check(capsys, cfg), "venues", "differ in more than case", "Binance and binance")
    cfg.write_text(body.replace("[venues.Binance]", "[venues.binance2]"))
    assert check(capsys, cfg) == (0, "ok\n", "")


# ------------------------------------------------------------------------ keys in the env


async def test_venues_check_names_a_key_with_a_line_end_as_the_engine_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README step 4, `cockpit venues check`, with a key exported from a file with Windows line
    ends (a "\\r" at its end): "FAIL binance trade: the venue refused the keys: ValueError:
    Forbidden control character detected in headers" - the venue refused nothing, the HTTP
    client would not send it - while step 5, the engine, names the variable and the fix. The
    check says what the engine says now, shows neither value, and sends no signed request."""
    from tests.test_venues_fakevenue import FakeVenue
    from tests.test_venues_loopback import _check, _config, _venue_toml
    from tests.test_venues_support import ENV, KEYS, venue_env

    venue_env(monkeypatch)
    server = FakeVenue("binance", sandbox=True)
    await server.start()
    try:
        config = _config(tmp_path, _venue_toml("binance", "binance", True), mode="testnet")
        bad = {
            "apiKey": KEYS["apiKey"] + "\r",  # a file with Windows line ends
            "secret": KEYS["secret"] + " ",  # pasted with a space
        }
        odd = [("apiKey", KEYS["apiKey"][:8] + "\x1b[0m"), ("secret", "\u201c" + KEYS["secret"])]
        for field, value in [*bad.items(), *odd]:
            venue_env(monkeypatch)
            monkeypatch.setenv(ENV[field], value)
            code, text = await _check(tmp_path, config, server, capsys)
            trade = next(line for line in text.splitlines() if " trade: " in line)
            assert code == 1
            assert trade.startswith("FAIL    binance trade: environment variable " + ENV[field])
            assert "holds a space, line end or control character" in trade or (
                "holds a character that is not ASCII" in trade
            )
            assert "refused" not in trade
            assert KEYS[field][:8] not in text and KEYS["secret"][:8] not in text
        assert server.signed == 0
    finally:
        await server.stop()


@pytest.mark.parametrize("value", ["\u201cAbC123dEf456GhI789\u201d", "AbC123dEf456Gh\u00e9789"])
def test_the_engine_refuses_a_key_that_is_not_ascii_without_showing_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    """A key pasted from a document with its typographic quotes, or a letter a keyboard layout
    changed, armed the engine: the venue then answered "signature not valid" (or "API-key format
    invalid") and never said why. `cockpit engine` refuses it at arming, before any venue is
    opened, in one line naming the variable, never the value; a plain key is not refused so."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        f'[engine]\nmode = "testnet"\ndata_dir = "{tmp_path}/d"\n'
        '[venues.binance]\nexchange = "binance"\napi_key_env = "RC_KEY"\nsecret_env = "RC_SEC"\n'
        + _strategies("a")
    )
    monkeypatch.setenv("RC_KEY", value)
    monkeypatch.setenv("RC_SEC", "s3cr3tS3CR3Ts3cr3t")

    async def started(*_: object, **__: object) -> int:  # armed: it would dial the testnet
        raise AssertionError("the engine was armed with that key")

    monkeypatch.setattr("cockpit.cli._run_headless", started)
    code = main(["engine", "--config", str(cfg)])
    out, err = capsys.readouterr()
    one_refusal(code, out, err, "venues.binance", "RC_KEY", "not ASCII", "not shown")
    assert value not in err and value[3:9] not in err and "s3cr3t" not in err

    from engine.config import load_config
    from engine.modes import arming_problems

    plain = {"RC_KEY": "AbC123dEf456GhI789", "RC_SEC": "s3cr3tS3CR3Ts3cr3t"}
    assert arming_problems(load_config(cfg), env=plain) == []


# ------------------------------------------------------------------------- TOML's own ways


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("m\u043ede", "CYRILLIC SMALL LETTER O (U+043E)"),  # looks like mode
        ("mode\u00a0", "NO-BREAK SPACE (U+00A0)"),
        ("mode ", "a space"),
    ],
)
def test_an_unknown_key_that_looks_right_says_what_makes_it_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, named: str
) -> None:
    """`"mоde" = "live"` with a Cyrillic о (pasted from a chat) was refused as
    "engine.mоde: unknown key; remove it or check its spelling", a line that reads exactly like
    the right key: the spelling checked, the mistake not found. The line now names the
    character."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[engine]\n"{key}" = "paper"\n', encoding="utf-8")
    one_refusal(*check(capsys, cfg), "unknown key", f"the name holds {named}")


# ------------------------------------------------------------------------------ profiles


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "config/profiles/aggressive.toml", "aggressive.toml", "", "a b"]
)
def test_a_profile_given_as_a_path_says_which_names_there_are(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """`--profile ../../etc/passwd` (or the profile's own file path) read nothing, and said only
    "is not a profile name", not what to give instead; the "no profile named" line did."""
    code = main(["config", "check", "--profile", name])
    out, err = capsys.readouterr()
    one_refusal(code, out, err, "--profile", "is not a profile name", "known: aggressive")
    assert "root:" not in err


# ------------------------------------------------------------------- live: starting cash


def _live_config(data_dir: Path, starting_cash: float) -> Any:
    from tests.test_venue_runtime import make_testnet_config

    cfg = make_testnet_config(data_dir)
    return parse_config(
        merge(
            cfg.model_dump(),
            {
                "engine": {"mode": "live"},
                "venues": {"binance": {"testnet": False}},
                "portfolio": {"starting_cash": starting_cash},
            },
        )
    )


async def test_live_refuses_a_starting_cash_the_account_does_not_hold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In live mode the engine's equity starts at portfolio.starting_cash, a figure of the
    config (100,000 USDT by default), and every limit in % of equity counts from it. On an
    account holding 9,814.88 USDT (the loopback binance's account) the 5% daily loss limit was
    5,000 USDT, the 15% drawdown 15,000 USDT (more than the account), a 2% entry 2,000 USDT:
    the loss limits never engage. The first live start now refuses a starting cash above what
    the venues hold in the quote currency, before anything is sent (one line, exit 2); at the
    balance exactly it starts."""
    from engine.execution import UnsupportedMode
    from tests.test_venue_runtime import TradingVenue, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    try:
        for cash in (100_000.0, 9_814.89):
            data_dir = tmp_path / f"refused-{cash:g}"
            engine = venue_engine(_live_config(data_dir, cash), data_dir, server)
            with pytest.raises(UnsupportedMode) as err:
                await engine.start()
            line = str(err.value)
            assert "\n" not in line and err.value.exit_code == 2
            assert f"portfolio.starting_cash is {cash:,.2f} USDT" in line
            assert "the venues hold 9,814.88 USDT (binance 9,814.88)" in line
            assert "at most 9,814.88" in line
        assert server.creates() == 0
        data_dir = tmp_path / "held"
        engine = venue_engine(_live_config(data_dir, 9_814.88), data_dir, server)
        await engine.start()
        await engine.stop()
        # A restart counts from the journal's starting cash (the config's is not read again).
        engine = venue_engine(_live_config(data_dir, 100_000.0), data_dir, server)
        await engine.start()
        try:
            assert engine.core is not None
            assert engine.core.portfolio.starting_cash == pytest.approx(9_814.88)
        finally:
            await engine.stop()
    finally:
        await server.stop()


async def test_the_canary_count_outlives_a_restart_at_its_boundary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One live order approved, sent and filled, then a restart: the engine counts it from the
    journal, so with canary_trades = 2 the next order is still capped at
    canary_max_order_notional, and with canary_trades = 1 it is not (the boundary, N and N+1).
    (Held as it stood, counted at the send; kept for the count made at the fill.)"""
    from tests.test_venue_runtime import TradingVenue, run_until, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    data_dir = tmp_path / "data"

    def cfg(canary: int) -> Any:
        base = _live_config(data_dir, 5_000.0).model_dump()
        base["safety"]["live"] = {"canary_trades": canary, "canary_max_order_notional": 100.0}
        return parse_config(base)

    try:
        engine = venue_engine(cfg(2), data_dir, server)
        await engine.start()
        try:
            core = engine.core
            assert core is not None
            await run_until(engine, lambda: bool(core.approvals.pending()))
            [pending] = core.approvals.pending()
            assert (await engine.command("approve", {"id": pending.approval_id}))["ok"]
            assert server.creates() == 1 and core.live_trades == 0  # sent, no trade yet
            await engine.execution.poll_once()  # its fill
            assert core.live_trades == 1
        finally:
            await engine.stop()
        for canary, capped in ((2, True), (1, False)):
            engine = venue_engine(cfg(canary), data_dir, server)
            await engine.start()
            try:
                assert engine.core is not None
                assert engine.core.live_trades == 1
                cap = engine.core.effective_limits().max_order_notional
                assert (cap == 100.0) is capped, cap
            finally:
                await engine.stop()
    finally:
        await server.stop()


# ------------------------------------------------------------- config check = the engine


@pytest.mark.parametrize(
    ("mode", "exchange", "refused"),
    [
        ("testnet", "okx", True),
        ("testnet", "bybit", True),
        ("live", "kraken", True),
        ("live", "kucoin", True),
        ("testnet", "binance", False),
        ("live", "binance", False),
    ],
)
def test_config_check_refuses_native_stops_the_engine_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, exchange: str, refused: bool
) -> None:
    """`native_stops = true` on okx: `config check` said ok, and `cockpit engine` refused it at
    start, after opening the venue and loading its markets ("the engine does not reconcile
    okx's stop orders yet"). The check refuses it now, in the engine's words, with no request."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[engine]\nmode = "{mode}"\ndata_dir = "{tmp_path}/d"\n'
        f'[venues.v]\nexchange = "{exchange}"\ntestnet = {str(mode == "testnet").lower()}\n'
        'api_key_env = "RC_K"\nsecret_env = "RC_S"\npassword_env = "RC_P"\n'
        "native_stops = true\n" + _strategies("a")
    )
    result = check(capsys, cfg)
    if not refused:
        assert result == (0, "ok\n", "")
        return
    one_refusal(*result, "venues.v.native_stops = true, but", "set native_stops = false")
    # The engine's own refusal, in the same words.
    from engine.venues.ccxt_broker import native_stops_problem
    from engine.venues.exchanges import exchange_class

    assert native_stops_problem(exchange_class(exchange)()) in result[2]


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="0123456789abcdef", min_size=24, max_size=24),  # a kucoin key
        st.text(alphabet="0123456789ABCDEF", min_size=32, max_size=32),  # an okx secret
    )
)
def test_every_hex_key_reads_as_a_key(key: str) -> None:
    """One kucoin key in ten (24 hex digits, "d2925223472402bd13c33266") changed between
    letters and digits too seldom for the key rule, so written as `api_key_env` it was taken
    for a variable's name, and `cockpit engine` printed "environment variable <the key> is not
    set". Hex of letters and digits, 16 or more, is a key."""
    from engine.config import looks_like_a_key

    assume(any(c.isdigit() for c in key) and any(c.isalpha() for c in key))
    assert looks_like_a_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "d2925223472402bd13c33266",  # kucoin-shaped, starting with a letter: a valid name
        "8315066484ab837bca8571a9",  # kucoin-shaped, starting with a digit: no name at all
        "RlgLKOmxgJTeKdNnFR",  # bybit-shaped, all letters: cannot be told from a name
    ],
)
def test_a_key_written_as_the_variable_name_is_never_repeated(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key: str,
) -> None:
    """A key pasted where its variable's name goes: `config check` and `cockpit engine` (whose
    stderr a service's log keeps) never repeat it, whether the config refuses it as a key or
    takes it for a name it cannot tell from one."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        f'[engine]\nmode = "testnet"\ndata_dir = "{tmp_path}/d"\n'
        f'[venues.binance]\nexchange = "binance"\napi_key_env = "{key}"\nsecret_env = "RC_SEC"\n'
        + _strategies("a")
    )
    monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RC_SEC", "s3cr3tS3CR3Ts3cr3t")

    async def started(*_: object, **__: object) -> int:
        raise AssertionError("armed without its key")

    monkeypatch.setattr("cockpit.cli._run_headless", started)
    for argv in (["config", "check"], ["engine"]):
        code = main([*argv, "--config", str(cfg)])
        out, err = capsys.readouterr()
        assert key not in out + err and key[:12] not in out + err, (argv, err)
        if argv == ["engine"] or key[0].isdigit() or key.startswith("d29"):
            assert code == 2, (argv, code, err)
            assert "api_key_env" in err and "not shown" in err, err
            assert "Traceback" not in err


async def test_two_sections_on_one_account_count_its_money_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`[venues.a]` and `[venues.b]` on the same exchange with the same key (one account, the
    symbols split between them): its 9,814.88 USDT is not 19,629.76 for the starting cash."""
    from engine.execution import UnsupportedMode
    from tests.test_venue_runtime import TradingVenue, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    try:
        data_dir = tmp_path / "data"
        doc = _live_config(data_dir, 15_000.0).model_dump()
        one = doc["venues"].pop("binance")
        doc["venues"] = {
            "a": {**one, "symbols": ["BTC/USDT"]},
            "b": {**one, "symbols": ["ETH/USDT"]},
        }
        doc["strategies"][0]["symbols"] = ["BTC/USDT", "ETH/USDT"]
        engine = venue_engine(parse_config(doc), data_dir, server)
        with pytest.raises(UnsupportedMode, match=r"the venues hold 9,814\.88 USDT \(a 9,814\.88"):
            await engine.start()
        assert server.creates() == 0
    finally:
        await server.stop()


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-1, max_value=4e7)
    | st.sampled_from(
        [0.0, 1e-300, 1e-10, 5e-10, 0.999999999, 1.0, 31_536_000.0, math.inf, math.nan]
    )
)
def test_an_accepted_throttle_window_always_counts_the_orders_of_its_second(value: float) -> None:
    """Whatever `per_seconds` the config accepts, the throttle it makes counts an order one
    second old less a nanosecond: no accepted window is a throttle that counts nothing."""
    doc = merge(
        default_dict(),
        {"risk": {"strategy_throttle": {"max_orders": 1, "per_seconds": value}}},
    )
    try:
        cfg = parse_config(doc)
    except ConfigError:
        return
    throttle = OrderThrottle(cfg.risk.strategy_throttle, cfg.risk.global_throttle)
    throttle.record("a", T0)
    assert throttle.strategy_count("a", T0) == 1
    assert throttle.strategy_count("a", T0 + NS_PER_SECOND - 1) == 1


async def test_an_order_the_venue_rejected_is_no_trade_of_the_canary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The canary counted live orders at their send: an order the venue rejected (insufficient
    balance, a lot or notional filter, a kill latched while it was on its way) ended it as a
    trade would. With canary_trades = 1 and the first order rejected, the next entry went out
    at the full 2% of equity (100 USDT) instead of the canary's 20: the first real trade with
    money was uncapped. Only an order with a fill counts now."""
    from tests.test_venue_runtime import TradingVenue, run_until, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    server = TradingVenue()
    server.script.append("insufficient")
    await server.start()
    data_dir = tmp_path / "data"
    doc = _live_config(data_dir, 5_000.0).model_dump()
    doc["safety"]["live"] = {"canary_trades": 1, "canary_max_order_notional": 20.0}
    doc["strategies"][0].update(
        kind="tests.test_venue_operations:BuyWhenFlat",  # (buys again after a reject)
        sizing={"model": "fixed_fraction", "fraction": 0.02},
    )
    engine = venue_engine(parse_config(doc), data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        notionals = []
        for _ in range(2):
            await run_until(engine, lambda: bool(core.approvals.pending()))
            [pending] = core.approvals.pending()
            notionals.append(pending.intent.qty * pending.intent.ref_price)
            await engine.command("approve", {"id": pending.approval_id})
            await engine.execution.poll_once()
        assert server.creates() == 2 and len(server.orders) == 1  # the first refused
        assert core.live_trades == 1
        assert all(10.0 < n <= 20.0 for n in notionals), notionals  # both under the canary
    finally:
        await engine.stop()
        await server.stop()
