"""Does the cockpit get in the engine's way? The engine's quote rate with and without the UI.

Runs the simulated feed at 2,000 quotes/s (3 symbols, paced in real time) twice for the same
number of seconds: headless (the engine alone) and under the Textual app (``App.run_test``,
120x40, the embedded engine in the app's event loop, tables at ~10 Hz and the chart at ~1 Hz).
While the app runs, keys are pressed every half second and the time from the press to the
screen showing its effect is measured (kill dialog open and closed, trace filter opened,
changed and cleared). Prints quotes/s for both runs, the loss, key-to-screen percentiles and
CPU use (user+sys over wall time) of each run.

    .venv/bin/python bench/ui_load.py [--seconds 30] [--rate 2000]

Targets: the engine keeps more than 90% of its headless rate; key to screen under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402

from cockpit.app import CockpitApp  # noqa: E402
from cockpit.tui.filter_screen import FilterScreen  # noqa: E402
from cockpit.tui.kill_screen import KillScreen  # noqa: E402
from cockpit.tui.session import EmbeddedSession  # noqa: E402
from engine.config import DEFAULT_CONFIG_PATH, parse_config  # noqa: E402
from engine.runtime import Engine  # noqa: E402

SYMBOLS = 3
CHARS = {"k": "k", "x": "x", "slash": "/", "escape": "\x1b", "down": None}


def bench_config(data_dir: Path, rate: float) -> Any:
    """The default config paced in real time so that all symbols together give ``rate``/s."""
    raw = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())
    sim = raw["market"]["simulated"]
    sim["quote_interval_ms"] = SYMBOLS / rate * 1000.0
    sim["speed"] = "realtime"
    raw["engine"]["data_dir"] = str(data_dir)
    return parse_config(raw)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def headless(rate: float, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(bench_config(Path(tmp), rate), tmp)
        await engine.start()
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        try:
            await engine.run(duration_s=seconds)
        finally:
            wall = time.monotonic() - wall0
            cpu = cpu_seconds() - cpu0
            await engine.stop()
        return {"quotes_per_s": engine.quotes_processed / wall, "cpu": cpu / wall, "wall": wall}


class Paints:
    """Watches the app's screen updates (what would go out to the terminal).

    Under ``run_test`` the driver is headless and writes nothing; the wrapper still turns
    each update into the terminal's escape sequences (what a real terminal would be sent), so
    the CPU figure includes that work. After each update it checks the awaited condition: the
    first update after which the key's effect holds is the one that showed it."""

    def __init__(self, app: CockpitApp) -> None:
        self.count = 0
        self._app = app
        self._display = app._display
        self._condition: Callable[[], bool] | None = None
        self._shown: asyncio.Future[float] | None = None
        app._display = self._paint  # type: ignore[method-assign]

    def _paint(self, screen: Any, renderable: Any) -> None:
        self._display(screen, renderable)
        if renderable is None:
            return
        render = getattr(renderable, "render_segments", None)
        if render is not None:
            render(self._app.console)
        self.count += 1
        if self._condition is not None and self._condition():
            self._condition = None
            if self._shown is not None and not self._shown.done():
                self._shown.set_result(time.perf_counter())

    def expect(self, condition: Callable[[], bool]) -> asyncio.Future[float]:
        self._condition = condition
        self._shown = asyncio.get_running_loop().create_future()
        return self._shown


async def with_ui(rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        session = EmbeddedSession(bench_config(Path(tmp), rate), tmp)
        app = CockpitApp(session=session)
        samples: dict[str, list[float]] = {}
        paints: Paints | None = None

        async def measure(name: str, key: str, done: Callable[[], bool]) -> None:
            """Press ``key`` as a terminal would (the driver posts it to the app) and time it
            to the first screen update after which ``done()`` holds. (Pilot.press is not
            used: it also waits for the process to go idle, up to a second a key.)"""
            assert paints is not None and app._driver is not None
            shown = paints.expect(done)
            t0 = time.perf_counter()
            app._driver.send_message(events.Key(key, CHARS.get(key)))
            painted = await asyncio.wait_for(shown, 5)
            samples.setdefault(name, []).append((painted - t0) * 1000.0)

        async with app.run_test(size=(120, 40)) as pilot:
            await asyncio.wait_for(app.loaded.wait(), 30)
            await pilot.pause()
            paints = Paints(app)
            engine = session.engine
            q0, cpu0, wall0 = engine.quotes_processed, cpu_seconds(), time.monotonic()
            refreshes0 = app.refreshes
            trace = app.main.trace
            end = wall0 + seconds

            def filtered() -> bool:
                return "strategy=" in str(trace.border_title)

            def dialog_up(kind: type) -> Callable[[], bool]:
                """The dialog is the screen and its content has been laid out."""

                def check() -> bool:
                    screen = app.screen
                    if not isinstance(screen, kind):
                        return False
                    titles = screen.query("#dialog-title")
                    return bool(titles) and titles.first().region.area > 0

                return check

            while time.monotonic() < end:
                await measure("open kill dialog", "k", dialog_up(KillScreen))
                await asyncio.sleep(0.25)
                await measure("close dialog", "escape", lambda: app.screen is app.main)
                await asyncio.sleep(0.25)
                await measure("open trace filter", "slash", dialog_up(FilterScreen))
                await asyncio.sleep(0.1)
                await measure("change trace filter", "down", filtered)
                await asyncio.sleep(0.1)
                await measure("clear trace filter", "x", lambda: not filtered())
                await asyncio.sleep(0.1)
                await measure("close dialog", "escape", lambda: app.screen is app.main)
                await asyncio.sleep(0.25)
            wall = time.monotonic() - wall0
            cpu = cpu_seconds() - cpu0
            quotes = engine.quotes_processed - q0
            refreshes = app.refreshes - refreshes0
            applied = app.view.events_applied
        return {
            "quotes_per_s": quotes / wall,
            "cpu": cpu / wall,
            "wall": wall,
            "samples": samples,
            "refresh_hz": refreshes / wall,
            "events": applied,
        }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--rate", type=float, default=2000.0, help="quotes/s, all symbols")
    args = parser.parse_args(argv)

    print(f"feed: {args.rate:,.0f} quotes/s over {SYMBOLS} symbols, real time, {args.seconds:g} s")
    alone = asyncio.run(headless(args.rate, args.seconds))
    print(
        f"headless : {alone['quotes_per_s']:9,.0f} quotes/s   cpu {alone['cpu'] * 100:5.1f}%"
        f" of one core"
    )
    ui = asyncio.run(with_ui(args.rate, args.seconds))
    loss = 1.0 - ui["quotes_per_s"] / alone["quotes_per_s"] if alone["quotes_per_s"] else 0.0
    print(
        f"with UI  : {ui['quotes_per_s']:9,.0f} quotes/s   cpu {ui['cpu'] * 100:5.1f}%"
        f" of one core   table refresh {ui['refresh_hz']:.1f} Hz   events {ui['events']:,}"
    )
    print(f"engine rate lost to the UI: {loss * 100:.1f}% (target < 10%)")
    every = [v for values in ui["samples"].values() for v in values]
    print(
        f"key to screen: {len(every)} presses  p50 {pct(every, 50):.1f} ms  "
        f"p99 {pct(every, 99):.1f} ms  max {max(every):.1f} ms (target p99 < 100 ms)"
    )
    for name, values in ui["samples"].items():
        print(
            f"  {name:<20} n={len(values):3d}  p50 {statistics.median(values):6.1f} ms"
            f"  p99 {pct(values, 99):6.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
