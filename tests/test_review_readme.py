"""The README and docs/*.md as a new user reads them: every command they show parses as written,
every option a synopsis names exists, every config snippet validates, and the figures, lines and
names they quote are what the program prints. Each test pins a mismatch found by running the docs
verbatim (an alert URL apprise refuses, `[--until ...]` inside a runnable block, metric names the
endpoint serves but the table lacked, defaults the breaker table stated for the wrong config)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from cockpit.cli import build_parser
from cockpit.cli import main as cli_main
from cockpit.fleet import load_fleet
from cockpit.oneshot import format_books
from engine.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    _overlay,
    check_runnable,
    load_config,
    parse_config,
)
from engine.types import Action, LimitSpec, Signal
from tests.test_safety_engine import (
    BTC,
    ETH,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the flatten test takes)
    scripted_config,
    start,
    strategy,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def _blocks(lang: str) -> list[tuple[str, str]]:
    """Every fenced block of ``lang`` in the README and the docs: (where, text)."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(2) == lang:
                line = text[: m.start()].count("\n") + 1
                body = "\n".join(row[len(m.group(1)) :] for row in m.group(3).splitlines())
                out.append((f"{path.name}:{line}", body))
    return out


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell snippet: continuation lines joined, comments dropped,
    each line split at ``&&``, ``||``, ``|``, ``;`` and ``&``."""
    out: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.extend(_split_line(line))
    return out


def _split_line(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", "|", ";", "&"}:
            commands.append([])
        elif token == "~" or token.startswith("~/"):
            commands[-1].append(os.path.expanduser(token))  # as the shell expands a word's ~
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _cockpit_argv(command: list[str]) -> list[str] | None:
    """The arguments given to cockpit in ``command`` (``.venv/bin/cockpit ...``, ``cockpit ...``,
    ``ssh -t host cockpit ...``), or None when it runs something else."""
    runs = [i for i, t in enumerate(command) if t == "cockpit" or t.endswith("/bin/cockpit")]
    if not runs or (runs[0] != 0 and command[0] != "ssh"):  # `journalctl -u cockpit` is not
        return None
    return command[runs[0] + 1 :]


def _parses(argv: list[str]) -> str | None:
    """None when the real parser takes ``argv``, else why not."""
    parser = build_parser(argv[0] if argv else None)
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        return f"exit {exc.code}"
    return None


def _shown_commands() -> list[tuple[str, list[str]]]:
    found = []
    for where, script in _blocks("sh"):
        for command in _shell_commands(script):
            argv = _cockpit_argv(command)
            if argv is not None:
                found.append((where, argv))
    return found


def test_every_cockpit_command_in_a_shell_block_parses_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A block a user copies into a shell is run verbatim: no `[--option]` synopsis, no option
    the parser does not know (docs/marketdata.md and the fleet kill had `[--until ...]`)."""
    shown = _shown_commands()
    assert len(shown) >= 30, shown  # the README and docs show that many; none may go missing
    bad = [(where, " ".join(argv), why) for where, argv in shown if (why := _parses(argv))]
    assert not bad, bad
    # the parser is strict: the synopsis the docs used to show is refused
    download = ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT"]
    assert _parses([*download, "--since", "2024-01-01"]) is None
    assert _parses([*download, "--since", "2024-01-01", "[--until", "2024-07-01]"]) is not None
    capsys.readouterr()


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


def _synopses() -> list[tuple[str, str]]:
    """Each `cockpit ...` code span in the first column of the README's command table."""
    out = []
    for row in (ROOT / "README.md").read_text().splitlines():
        if row.startswith("| `cockpit"):
            first = row.split(" | ")[0].replace("\\|", "|")
            out += [("README.md", span) for span in re.findall(r"`(cockpit[^`]*)`", first)]
    ops = (ROOT / "docs" / "operations.md").read_text()
    for _, body in _blocks(""):
        if body.startswith("cockpit status\n"):  # the one-shot synopsis of operations.md
            out += [("operations.md", line) for line in body.splitlines()]
    assert "cockpit status\ncockpit approvals" in ops
    return out


def test_every_option_a_command_synopsis_names_exists() -> None:
    """The command table's synopses name only options the command has."""
    synopses = _synopses()
    assert len(synopses) >= 35, synopses
    missing = []
    for where, span in synopses:
        words = re.findall(r"^cockpit((?: [a-z][a-z-]*)*)", span)[0].split()
        parser = _subparser(build_parser(words[0] if words else None), words)
        known = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", span):
            if flag not in known:
                missing.append((where, span, flag))
    assert not missing, missing


def _default_data() -> dict:
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def test_every_config_snippet_in_the_docs_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole config (it has `[[strategies]]`) is checked as `cockpit config check` checks it;
    a section alone is checked laid over the default config; a fleet file as `--fleet` reads
    it. Unknown keys, wrong types and impossible values are errors in each."""
    monkeypatch.chdir(tmp_path)
    snippets = _blocks("toml")
    assert len(snippets) >= 8, snippets
    checked = 0
    for where, text in snippets:
        data = tomllib.loads(text)
        if "engines" in data:
            fleet = tmp_path / "fleet.toml"
            fleet.write_text(text)
            assert load_fleet(fleet), where
        elif "strategies" in data:
            try:
                check_runnable(parse_config(data))
            except ConfigError as exc:
                pytest.fail(f"{where}: {exc}")
        else:
            try:
                parse_config(_overlay(_default_data(), data))
            except ConfigError as exc:
                pytest.fail(f"{where}: {exc}")
        checked += 1
    assert checked == len(snippets)


def test_the_readme_alert_example_is_a_url_apprise_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's three lines (export, copy the default and append `[alerts]`) make a config
    that `alerts test` and `engine` accept: `tgram://BOT_TOKEN/CHAT_ID` was a config error."""
    block = next(body for _, body in _blocks("sh") if "COCKPIT_ALERT_URL" in body)
    export = re.search(r"^export COCKPIT_ALERT_URL='([^']+)'$", block, re.M)
    printf = re.search(r"printf '([^']+)' >> my\.toml", block)
    assert export and printf, block
    monkeypatch.setenv("COCKPIT_ALERT_URL", export.group(1))
    mine = tmp_path / "my.toml"
    mine.write_text(DEFAULT_CONFIG_PATH.read_text() + printf.group(1).replace("\\n", "\n"))
    cfg = load_config(mine)
    assert cfg.alerts is not None and cfg.alerts.urls_env == ["COCKPIT_ALERT_URL"]
    check_runnable(cfg)  # raises ConfigError for a URL apprise cannot use
    monkeypatch.setenv("COCKPIT_ALERT_URL", "tgram://BOT_TOKEN/CHAT_ID")
    with pytest.raises(ConfigError, match="COCKPIT_ALERT_URL"):
        check_runnable(load_config(mine))


def test_alerts_test_prints_the_line_the_readme_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README quotes `alerts test`'s line for its example without a network; the delivery
    is faked here (no test touches the internet), the rest is the real command."""
    from engine.alert_send import AppriseDestination, Delivery

    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"^`(default +tgram://[^`]+FAILED: ([^`]+))`$", readme, re.M)
    assert quoted, "README no longer quotes the line"
    block = next(body for _, body in _blocks("sh") if "COCKPIT_ALERT_URL" in body)
    url = re.search(r"^export COCKPIT_ALERT_URL='([^']+)'$", block, re.M)
    assert url
    monkeypatch.setenv("COCKPIT_ALERT_URL", url[1])
    mine = tmp_path / "my.toml"
    mine.write_text(
        DEFAULT_CONFIG_PATH.read_text() + '\n[alerts]\nurls_env = ["COCKPIT_ALERT_URL"]\n'
    )

    async def offline(self: AppriseDestination, alert: object) -> Delivery:
        return Delivery(False, quoted[2])

    monkeypatch.setattr(AppriseDestination, "send", offline)
    assert cli_main(["alerts", "test", "--config", str(mine)]) == 1
    assert capsys.readouterr().out.splitlines() == [quoted[1]]


def _metric_table_names() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("| metric | what |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`(cockpit_[a-z_]+)", table))


def test_the_metrics_table_names_every_metric_the_endpoint_serves() -> None:
    """README: "docs/operations.md lists every name". A counter family ``cockpit_x`` is served
    as ``cockpit_x_total``."""
    source = (ROOT / "engine" / "telemetry.py").read_text()
    served = set(re.findall(r'"(cockpit_[a-z_]+)"', source))
    assert len(served) >= 55, served
    counters = set(re.findall(r'(?:counter|CounterMetricFamily)\(\s*"(cockpit_[a-z_]+)"', source))
    counters |= set(re.findall(r'\("(cockpit_[a-z_]+)", "[a-z]+", "[^"]+"\)', source))
    documented = _metric_table_names()
    missing = sorted(
        name for name in served if name not in documented and f"{name}_total" not in documented
    )
    assert not missing, missing
    wrong_total = sorted(n for n in counters if n in documented and f"{n}_total" not in documented)
    assert not wrong_total, wrong_total
    # docs/grafana-dashboard.json queries only names the endpoint serves
    dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text()
    queried = set(re.findall(r"(cockpit_[a-z_]+)", dashboard))
    assert len(queried) >= 20, queried
    unknown = sorted(
        name
        for name in queried
        if name not in served and re.sub(r"_(total|bucket|count|sum)$", "", name) not in served
    )
    assert not unknown, unknown


def test_the_breaker_table_gives_both_defaults_the_config_has() -> None:
    """The default config and a config that leaves `[safety.breakers]` out differ; the table
    says both where they do (a testnet.toml written from the README gets the second)."""
    readme = (ROOT / "README.md").read_text()
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z_]+)` \| ([^|]+) \|", readme, re.M)}
    shipped = load_config().safety.breakers
    bare = parse_config({}).safety.breakers
    losses = rows["consecutive_losses"]
    assert f"{shipped.consecutive_losses} in the default config" in losses
    assert f"({bare.consecutive_losses} when" in losses
    assert f"{shipped.global_consecutive_losses} for all strategies together" in losses
    assert f"{bare.global_consecutive_losses} when left out" in losses
    rate = rows["signal_rate"]
    assert f"({shipped.baseline_signals_per_hour:g} in the default config" in rate
    assert f"{bare.baseline_signals_per_hour:g} when left out" in rate
    assert shipped.baseline_signals_per_hour != bare.baseline_signals_per_hour


def test_the_status_books_line_reads_as_the_readme_quotes_it() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    quoted = re.search(r"`books +N acting decisions with their L2 book, M without \(x%\)`", readme)
    assert quoted, "README no longer quotes the status line"
    assert format_books({"taken": 3, "missing": 1}) == (
        "3 acting decisions with their L2 book, 1 without (25.0%)"
    )


def test_the_readme_stop_loss_example_prints_the_exits_it_quotes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's `--stop-loss 0.5` command, run as shown (from the repository, the chart
    left out), prints the `closed by` figures the README quotes."""
    monkeypatch.setenv("COCKPIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    argv = next(a for _, a in _shown_commands() if "--stop-loss" in a and a[0] == "backtest")
    readme = " ".join((ROOT / "README.md").read_text().split())
    quoted = re.search(r"its `closed by` line reads `([^`]+)`", readme)
    assert quoted, "README no longer quotes the exits"
    assert cli_main([*argv, "--no-chart", "--no-color"]) == 0
    out = capsys.readouterr().out
    closed = next(line for line in out.splitlines() if line.strip().startswith("closed by"))
    assert quoted.group(1) in " ".join(closed.split()), (quoted.group(1), closed)


def test_the_readme_key_table_lists_every_key_the_cockpit_binds() -> None:
    """Help lists each bound key; the README's key table must too, and name no key the
    cockpit lacks (`B` and `S` were bound and in help, but missing from the table)."""
    from cockpit.tui.keys import ACTIONS

    readme = (ROOT / "README.md").read_text()
    table = readme.split("| key | action |", 1)[1].split("\n\n", 1)[0]
    listed: set[str] = set()
    for row in table.splitlines()[2:]:
        first = row.split(" | ")[0]
        for lo, hi in re.findall(r"`(\d)`-`(\d)`", first):  # `1`-`7`
            listed |= {str(n) for n in range(int(lo), int(hi) + 1)}
        listed |= set(re.findall(r"`([^`]+)`", first))
    bound = {a.shown_key for a in ACTIONS}
    assert len(bound) >= 25, bound
    assert bound - listed == set(), sorted(bound - listed)
    extra = listed - bound - {"Enter", "Ctrl-P"}
    assert extra == set(), sorted(extra)


async def test_a_flatten_that_sends_nothing_leaves_the_resting_closes_working(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """README: `cockpit flatten` cancels the orders resting on the closing side first (they
    would close on top of it). Found running the docs: when the flatten's own order was then
    denied (here STALE_QUOTE: the symbol's feed went quiet), the resting sell (a take-profit,
    an earlier flatten in flight) was cancelled anyway: the long kept neither. They are
    cancelled only when a closing order goes out."""
    cfg = scripted_config(
        data_dir, strategies=[strategy("alpha", "auto"), strategy("gamma", "auto")]
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)  # long 0.01 (600 USDT)
    offer = Signal(Action.SELL, "scripted", "take profit", 1.0, limit=LimitSpec(price=60_300.0))
    await h.signal("gamma", BTC, offer, 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.01
    resting = [o.client_order_id for o in h.core.open_orders.values()]
    assert len(resting) == 1
    await h.feed(ETH, 3_000.0, dt=30.0)  # BTC's feed goes quiet: its last quote is 30 s old
    sent = len(h.sent)
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "get out"})
    assert not reply["ok"] and "STALE_QUOTE" in reply["message"], reply
    assert [o.client_order_id for o in h.core.open_orders.values()] == resting  # still working
    assert h.sent[sent:] == []

    await h.feed(BTC, 60_000.0)  # fresh again
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "get out"})
    assert reply["ok"], reply  # a flatten that goes out still cancels the resting sell first
    assert not [o for o in h.core.open_orders.values() if o.strategy_id == "gamma"]
    assert [(o.side, o.qty, o.reduce_only) for o in h.sent[sent:]] == [("sell", 0.01, True)]


def test_no_fleet_column_header_runs_into_the_one_before() -> None:
    """docs/operations.md's overview row lists "kill switch, equity": with every engine
    DISCONNECTED (empty cells) the header read `killequity`, the one label without the
    leading space that keeps columns apart."""
    from cockpit.tui.fleet import ANSWER_COLUMN, ENGINE_COLUMNS, QUEUE_COLUMNS

    labels = [str(label) for label, _ in (*ENGINE_COLUMNS, ANSWER_COLUMN, *QUEUE_COLUMNS)]
    assert len(labels) >= 19
    assert [label for label in labels if not label.startswith(" ")] == []


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("abc", "must be a number"),
        ("nan", "must be a finite number"),
        ('"10"', "must be a number, not a quoted string (write it without the quotes)"),
    ],
)
def test_a_param_that_is_no_number_is_told_so_without_talk_of_quotes(
    value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit backtest --param fast=abc` (as the README's examples pass parameters) said
    "not a quoted string (write it without the quotes)": there were no quotes to remove."""
    shipped = ROOT / "tests/data/nautilus_trader/btc-perp-20211231-20220201_1m.csv.xz"
    argv = ["backtest", "--data", str(shipped), "--strategy", "ema_cross", "--param"]
    assert cli_main([*argv, f"fast={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f": {said}"), err


def test_a_sweep_names_its_own_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """`cockpit sweep` refused in lines starting "backtest error:", a command the user had not
    run; each line now names the sweep."""
    shipped = ROOT / "tests/data/nautilus_trader/btc-perp-20211231-20220201_1m.csv.xz"
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(shipped)]
    assert cli_main([*argv, "--param", "fast=1:200:1", "--param", "slow=1:200:1"]) == 2
    assert cli_main([*argv, "--param", "fast=5", "--train", "1d"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("sweep error: ") for line in lines), lines


def test_a_fill_line_shows_its_fee_without_float_noise() -> None:
    """`cockpit journal` and `cockpit trace` printed a paper fill's fee as
    1.9999839698000001 (the float's repr)."""
    from cockpit.oneshot import format_event_body

    fill = {"strategy_id": "s", "symbol": "BTC/USDT", "side": "buy", "qty": 0.03329}
    fill |= {"price": 60077.62, "fee": 0.03329 * 60077.62 * 0.001}
    line = format_event_body({"event": "fill", "fill": fill, "realized_pnl": -0.1 - 0.2})
    assert line == "s BTC/USDT buy 0.03329 @ 60077.62 fee 1.99998397 pnl -0.3", line


def _differences(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{path}.{k}")
        ]
    return [path.lstrip(".")] if a != b else []


def test_what_a_config_file_leaves_out_differs_from_the_default_only_where_the_readme_says() -> (
    None
):
    """README, Configuration: a config file is not laid over config/default.toml; the built-in
    defaults differ from the default config's only in the breakers it names, the simulated
    market and the strategies (config/portfolio-btc.toml's comment said the opposite)."""
    shipped = load_config().model_dump()
    bare = parse_config({}).model_dump()
    differing = _differences(shipped, bare)
    breakers = {d.rsplit(".", 1)[1] for d in differing if d.startswith("safety.breakers.")}
    rest = {d for d in differing if not d.startswith(("safety.breakers.", "market.simulated."))}
    assert breakers == {
        "consecutive_losses",
        "global_consecutive_losses",
        "baseline_signals_per_hour",
    }
    assert rest == {"strategies"}, rest
    readme = " ".join((ROOT / "README.md").read_text().split())
    said = re.search(r"config's but for the breakers \(([^;]+);", readme)
    assert said, "README no longer says which defaults differ"
    for name in breakers:
        assert f"`{name}` {bare['safety']['breakers'][name]:g}" in said.group(1), said.group(1)


def test_ctrl_c_at_a_terminal_ends_a_sweep_without_a_worker_traceback(tmp_path: Path) -> None:
    """docs/research.md: Ctrl-C cancels every task, closes the LocalCluster and exits 130; the
    README: errors are one line, never a traceback. A terminal's Ctrl-C goes to the whole
    process group, workers included: each printed a KeyboardInterrupt traceback (the existing
    test interrupts the parent alone)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.conftest import BARS_CSV

    argv = [sys.executable, "-m", "cockpit", "sweep", "--strategy", "ema_cross"]
    argv += ["--data", str(BARS_CSV), "--param", "fast=2:40:1", "--param", "slow=60,90"]
    argv += ["--qty", "0.1", "--workers", "2", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    children: list[psutil.Process] = []

    def ignores_sigint(p: psutil.Process) -> bool:  # SigIgn in /proc: bit 1 is SIGINT
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
        except OSError:
            return False
        return bool(int(re.search(r"^SigIgn:\s*([0-9a-f]+)", status, re.M)[1], 16) & 2)

    try:
        deadline = time.monotonic() + 120
        started = None
        while time.monotonic() < deadline and proc.poll() is None:
            kids = psutil.Process(proc.pid).children(recursive=True)
            workers = [k for k in kids if "--multiprocessing-fork" in " ".join(k.cmdline())]
            if started is None and len(workers) >= 2:
                started, children = time.monotonic(), kids
            # each worker has started (the fix: it ignores SIGINT), else give them 45 s (a
            # loaded machine imports slowly: a Ctrl-C in a worker's first seconds, before its
            # preload ran, is Python's own KeyboardInterrupt, not what this test is about)
            if started is not None and (
                all(ignores_sigint(w) for w in workers) or time.monotonic() - started > 45.0
            ):
                time.sleep(1.0)  # and took tasks
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(children) >= 2, "the sweep never got going"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode()
    assert proc.returncode == 130, text[-2000:]
    assert "sweep cancelled" in text and "Traceback" not in text, text[-2000:]
    assert out == b""
    _gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"stray processes: {[p.pid for p in alive]}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """README: "`.ci/run` runs exactly this" (the quick start's second command)."""
    quick = [body.strip() for where, body in _blocks("sh") if where.startswith("README.md")][:2]
    assert quick[0].endswith(".venv/bin/cockpit") and "pytest" in quick[1], quick
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert quick[1] in ci, (quick[1], ci)


@pytest.mark.parametrize(
    ("outcome", "line"),
    [
        ("submitted", "order_intent"),
        ("dust", "dust"),
        ("denied", "rejection"),
        ("awaiting_approval", "rejection"),
    ],
)
def test_the_headless_intent_lines_are_named_as_the_readme_says(outcome: str, line: str) -> None:
    """The README named "order intent, rejection" without saying that an intent waiting for
    approval is printed as `rejection` (its `outcome` says which)."""
    from engine.events import IntentChecked
    from engine.headless import describe_event
    from tests.test_checks import make_intent

    row = next(
        r for r in (ROOT / "README.md").read_text().splitlines() if "run the engine headless" in r
    )
    assert f"`{line}`" in row, row
    shown = describe_event(IntentChecked(make_intent(), (), outcome))
    assert shown is not None and shown["event"] == line and shown["outcome"] == outcome
