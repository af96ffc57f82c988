"""Prometheus metrics for a running engine (``cockpit engine --metrics PORT``), served by
prometheus-client's HTTP server.

That server answers in its own thread, and the engine's state is mutated by the event loop,
so the thread never reads the engine. :class:`MetricsSampler`, a companion on the loop, takes
the engine's snapshot about once a second (the same one ``cockpit status`` shows, so the two
agree) and turns it into an immutable :class:`Sample`; :class:`SampleCollector` only hands the
newest sample to the exposition. Counts of events (orders by status, denials by code) come
from a fan-out watcher, a dict increment per shown event; nothing is added per quote (quotes
are the engine's own counter). The sampler also measures the loop's lag, so a scrape answered
while the loop is stuck still says so (``cockpit_sample_age_seconds`` grows).

Every name starts with ``cockpit_``; docs/grafana-dashboard.json charts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.health import DEFAULT_MAX_LAG_S, Buckets, loop_ticks
from engine.vocabulary import (
    TRADING_BLOCKED,
    EventKind,
    IntentOutcome,
    TradingState,
    kill_rank,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from engine.runtime import Engine

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 1.0
LAG_TICK_S = 0.1
# A sample this old means a stuck event loop (one is taken every SAMPLE_EVERY_S): the engine
# is served as not running (cockpit_engine_running 0) and its heartbeat as held back (pings go
# from the loop), its other last values with their age.
STALE_AFTER_S = 5.0
LAG_WINDOW_S = 60.0  # cockpit_event_loop_lag_max_seconds: the worst lag of this long
TRADING_STATES = (*(s.value for s in TradingState), TRADING_BLOCKED)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family, frozen: what the exposition thread reads.

    ``kind`` is gauge, counter or histogram; a histogram row's value is ``(cumulative buckets,
    sum)``. ``name`` is the family name (a counter's samples get ``_total``)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    rows: tuple[tuple[tuple[str, ...], Any], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    taken: float  # time.monotonic() when it was taken
    cost_s: float  # how long taking it held the event loop
    running: bool  # the engine was running (False: the final sample of a run)
    errors: int  # samples that failed before this one
    families: tuple[Family, ...]


class EventCounts:
    """A fan-out watcher: counts of shown events by kind, order updates by status, denied
    intents by denial code. Cheap and never raises (fan-out watchers must not)."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.order_status: dict[str, int] = {}
        self.denials: dict[str, int] = {}
        self.malformed = 0

    def __call__(self, item: dict[str, Any]) -> None:
        try:
            kind = item["event"]
            kinds = self.kinds
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == EventKind.ORDER:
                status = str(item["order"]["status"])
                self.order_status[status] = self.order_status.get(status, 0) + 1
            elif kind == EventKind.INTENT and item.get("outcome") == IntentOutcome.DENIED:
                denials = self.denials
                for verdict in item.get("verdicts") or ():
                    if not verdict.get("ok"):
                        code = str(verdict.get("code"))
                        denials[code] = denials.get(code, 0) + 1
        except Exception:
            self.malformed += 1


class _Families:
    """Builds the families of one sample."""

    def __init__(self) -> None:
        self.out: list[Family] = []

    def add(
        self,
        kind: str,
        name: str,
        help_text: str,
        value: Any = None,
        labels: tuple[str, ...] = (),
        rows: Any = (),
    ) -> None:
        if value is not None:
            rows = (((), value),)
        clean = tuple(
            (tuple(str(v) for v in lv), val if kind == "histogram" else float(val))
            for lv, val in rows
            if val is not None
        )
        self.out.append(Family(name, kind, help_text, labels, clean))

    def gauge(self, name: str, help_text: str, value: Any = None, **kw: Any) -> None:
        self.add("gauge", name, help_text, value, **kw)

    def counter(self, name: str, help_text: str, value: Any = None, **kw: Any) -> None:
        self.add("counter", name, help_text, value, **kw)

    def histogram(self, name: str, help_text: str, buckets: Buckets) -> None:
        self.add("histogram", name, help_text, (buckets.cumulative(), buckets.sum))


def _alerts_view(engine: Engine, snap: dict[str, Any]) -> dict[str, Any]:
    """The alert dispatcher's counts (``snapshot["alerts"]``, or ``engine.alerts.view()``);
    zeros when no alerts are configured."""
    view = snap.get("alerts")
    if not isinstance(view, dict):
        alerts = getattr(engine, "alerts", None)
        with contextlib.suppress(Exception):
            view = alerts.view() if alerts is not None else None
    return view if isinstance(view, dict) else {}


def build_families(
    engine: Engine,
    snap: dict[str, Any],
    counts: EventCounts,
    lag: Buckets,
    worst_lag_s: float,
) -> list[Family]:
    """Every metric, from one snapshot and the sampler's own counts (on the event loop)."""
    f = _Families()
    core = engine.core
    source = getattr(engine.source, "name", "")
    f.gauge(
        "cockpit_engine_info",
        "The engine's mode, risk profile and market source (always 1).",
        labels=("mode", "profile", "source"),
        rows=(((snap["mode"], snap["profile"], source), 1),),
    )
    f.gauge(
        "cockpit_session",
        "The engine session number (grows at every start).",
        core.session if core is not None else 0,
    )
    counters = snap["counters"]
    f.counter("cockpit_quotes", "Market events processed (quotes and bars).", counters["quotes"])
    f.counter(
        "cockpit_quotes_rejected",
        "Quotes the feed validator refused, by reason code.",
        labels=("code",),
        rows=tuple(((c,), n) for c, n in sorted(counters["quotes_rejected"].items())),
    )
    f.counter("cockpit_decisions", "Strategy decisions made.", counters.get("decisions", 0))
    f.counter(
        "cockpit_intents",
        "Order intents by outcome (submitted, denied, awaiting_approval, dust).",
        labels=("outcome",),
        rows=tuple(((o.value,), counters.get(o.value, 0)) for o in IntentOutcome),
    )
    f.counter(
        "cockpit_intent_denials",
        "Failed pre-trade checks of denied intents, by denial code.",
        labels=("code",),
        rows=tuple(((c,), n) for c, n in sorted(counts.denials.items())),
    )
    f.counter(
        "cockpit_order_updates",
        "Order state changes shown, by the status reached.",
        labels=("status",),
        rows=tuple(((s,), n) for s, n in sorted(counts.order_status.items())),
    )
    f.gauge(
        "cockpit_open_orders", "Orders open now.", len(core.open_orders) if core is not None else 0
    )
    f.counter("cockpit_fills", "Fills received.", counters.get("fills", 0))
    f.counter(
        "cockpit_events",
        "Engine events shown (after their journal rows committed), by kind; marks excluded.",
        labels=("kind",),
        rows=tuple(((k,), n) for k, n in sorted(counts.kinds.items())),
    )
    f.counter(
        "cockpit_events_dropped",
        "Events never shown because the journal failed before them.",
        engine.events_dropped,
    )
    f.gauge(
        "cockpit_pending_approvals",
        "Orders waiting for a person's approval.",
        len(snap["approvals"]),
    )

    p = snap["portfolio"]
    ccy = p["quote_currency"]
    money = f" ({ccy})"
    f.gauge("cockpit_equity", "Account equity" + money, p["equity"])
    f.gauge("cockpit_cash", "Cash" + money, p["cash"])
    f.gauge(
        "cockpit_realized_pnl",
        "Realized PnL since the journal began, gross of fees (cockpit_fees_paid)" + money,
        p["realized_pnl"],
    )
    f.gauge(
        "cockpit_unrealized_pnl", "Unrealized PnL of open positions" + money, p["unrealized_pnl"]
    )
    f.gauge("cockpit_daily_pnl", "PnL since the UTC day began" + money, p["daily_pnl"])
    f.gauge("cockpit_fees_paid", "Fees paid" + money, p["fees_paid"])
    f.gauge("cockpit_peak_equity", "Highest equity seen" + money, p["peak_equity"])
    f.gauge("cockpit_drawdown_ratio", "Fall from peak equity, as a fraction of it.", p["drawdown"])
    f.gauge(
        "cockpit_gross_exposure", "Gross exposure of open positions" + money, p["gross_exposure"]
    )
    f.gauge("cockpit_open_positions", "Symbols with an open position.", p["open_position_count"])
    f.gauge(
        "cockpit_position_qty",
        "Position size by symbol (negative: short).",
        labels=("symbol", "venue"),
        rows=tuple(((x["symbol"], x["venue"]), x["qty"]) for x in snap["positions"]),
    )
    f.gauge(
        "cockpit_position_notional",
        "Position value at the mark by symbol" + money,
        labels=("symbol", "venue"),
        rows=tuple(((x["symbol"], x["venue"]), x["qty"] * x["mark"]) for x in snap["positions"]),
    )
    limits = snap["limits"]
    f.gauge(
        "cockpit_limit_value",
        "Where each risk gauge stands (daily_loss, drawdown, exposure in %; order_rate).",
        labels=("limit", "unit"),
        rows=tuple(((k, g["unit"]), g["value"]) for k, g in sorted(limits.items())),
    )
    f.gauge(
        "cockpit_limit_max",
        "The limit each risk gauge is held to, in its unit.",
        labels=("limit", "unit"),
        rows=tuple(((k, g["unit"]), g["limit"]) for k, g in sorted(limits.items())),
    )
    perf = snap["performance"]["strategies"]
    f.gauge(
        "cockpit_slippage_bps",
        "Average slippage paid per fill, by strategy (bps against the quote mid).",
        labels=("strategy",),
        rows=tuple(((r["strategy"],), r["slippage_bps"]) for r in perf),
    )
    f.gauge(
        "cockpit_slippage_model_bps",
        "Average slippage the fill model expected for the same fills, by strategy (bps).",
        labels=("strategy",),
        rows=tuple(((r["strategy"],), r["model_bps"]) for r in perf),
    )
    f.gauge(
        "cockpit_slippage_cost",
        "Slippage paid, by strategy" + money,
        labels=("strategy",),
        rows=tuple(((r["strategy"],), r["slippage_cost"]) for r in perf),
    )
    f.gauge(
        "cockpit_strategy_realized_pnl",
        "Realized PnL net of fees, by strategy" + money,
        labels=("strategy",),
        rows=tuple(((r["strategy"],), r["realized_pnl"]) for r in perf),
    )
    f.gauge(
        "cockpit_strategy_paused",
        "1 while a strategy is paused (by a person or a breaker).",
        labels=("strategy",),
        rows=tuple(((s["id"],), int(s["paused"])) for s in snap["strategies"]),
    )
    latency = snap["performance"]["latency"]
    f.gauge(
        "cockpit_order_latency_seconds",
        "Order path step durations over the newest orders (quote>decision ... quote>fill).",
        labels=("step", "quantile"),
        rows=tuple(
            ((step, q), v[key] / 1000 if v[key] is not None else None)
            for step, v in sorted(latency.items())
            for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"))
        ),
    )

    breakers = snap["breakers"]
    f.gauge(
        "cockpit_breaker_tripped",
        "1 while a circuit breaker is tripped.",
        labels=("breaker", "scope"),
        rows=tuple(((b["name"], b["scope"]), int(b["tripped"])) for b in breakers),
    )
    f.gauge(
        "cockpit_breaker_value",
        "What each circuit breaker measures now.",
        labels=("breaker", "scope"),
        rows=tuple(((b["name"], b["scope"]), b["value"]) for b in breakers),
    )
    f.gauge(
        "cockpit_breaker_limit",
        "Where each circuit breaker trips.",
        labels=("breaker", "scope"),
        rows=tuple(((b["name"], b["scope"]), b["limit"]) for b in breakers),
    )
    kill = snap["kill_switch"]["level"]
    f.gauge(
        "cockpit_kill_switch_level",
        "Kill switch: 0 off, 1 entries, 2 halt, 3 flatten.",
        kill_rank(kill) + 1 if kill is not None else 0,
    )
    state = snap["trading_state"]["state"]
    f.gauge(
        "cockpit_trading_state",
        "1 for the trading state in force (ACTIVE, REDUCING, HALTED, or BLOCKED: journal down).",
        labels=("state",),
        rows=tuple(((s,), int(s == state)) for s in TRADING_STATES),
    )

    journal = engine.journal
    # A commit waiting for the disk longer than the heartbeat's bound is a journal that does
    # not write either (nothing is recorded, no order goes out), though no error says so yet:
    # the rule the heartbeat and systemd's watchdog stop on (engine.health).
    hb_cfg = engine.cfg.heartbeat
    bound = hb_cfg.max_lag_s if hb_cfg is not None else DEFAULT_MAX_LAG_S
    f.gauge(
        "cockpit_journal_ok",
        "1 while the journal writes (0: failed, trading blocked; or a commit has waited for "
        f"the disk longer than {bound:g} s).",
        int(
            journal is not None
            and journal.failed is None
            and not engine.blocked_reason
            and journal.commit_age_s() <= bound
        ),
    )
    if journal is not None:
        f.histogram(
            "cockpit_journal_commit_seconds",
            "Journal group commits: insert and fsync'd commit, seconds.",
            journal.commit_seconds,
        )
        f.counter("cockpit_journal_rows", "Journal rows committed.", journal.rows_written)
        f.gauge(
            "cockpit_journal_backlog_rows",
            "Journal rows appended, not yet committed.",
            journal.backlog,
        )
    f.histogram(
        "cockpit_event_loop_lag_seconds",
        f"How late the event loop woke a {LAG_TICK_S:g} s sleeper, seconds.",
        lag,
    )
    f.gauge(
        "cockpit_event_loop_lag_max_seconds",
        f"The worst event loop lag in the last {LAG_WINDOW_S:g} s, seconds.",
        worst_lag_s,
    )

    venues = snap["venues"]
    f.gauge(
        "cockpit_venue_connected",
        "1 while a venue's market data is connected and in sync.",
        labels=("venue",),
        rows=tuple(((v,), int(bool(x.get("connected")))) for v, x in sorted(venues.items())),
    )
    f.gauge(
        "cockpit_venue_halted",
        "1 while reconciliation holds a venue halted.",
        labels=("venue",),
        rows=tuple(((v,), int(bool(x.get("halted")))) for v, x in sorted(venues.items())),
    )
    f.gauge(
        "cockpit_venue_clock_offset_ms",
        "The venue's clock minus ours, milliseconds.",
        labels=("venue",),
        rows=tuple(((v,), x.get("clock_offset_ms")) for v, x in sorted(venues.items())),
    )
    feeds = [
        (v, sym, st)
        for v, x in sorted(venues.items())
        for sym, st in sorted(((x.get("feed") or {}).get("symbols") or {}).items())
    ]
    f.gauge(
        "cockpit_feed_synced",
        "1 while a symbol's venue feed is in sync.",
        labels=("venue", "symbol"),
        rows=tuple(((v, s), int(bool(st.get("synced")))) for v, s, st in feeds),
    )
    for name, key, text in (
        ("cockpit_feed_quotes", "quotes", "Quotes received from a venue feed, by symbol."),
        ("cockpit_feed_errors", "errors", "Errors of a venue feed, by symbol."),
        ("cockpit_feed_reconnects", "reconnects", "Reconnects of a venue feed, by symbol."),
    ):
        f.counter(
            name,
            text,
            labels=("venue", "symbol"),
            rows=tuple(((v, s), st.get(key)) for v, s, st in feeds),
        )

    alerts = _alerts_view(engine, snap)
    f.gauge(
        "cockpit_alert_routes",
        "Alert destinations configured: each URL of each route, and the command hook.",
        alerts.get("routes", 0),
    )
    for name, key, text in (
        ("cockpit_alerts_sent", "sent", "Alerts delivered."),
        ("cockpit_alerts_failed", "failed", "Alert deliveries that failed."),
        (
            "cockpit_alerts_dropped",
            "dropped",
            "Alerts dropped because their queue was full (a rate limit summarises, never drops).",
        ),
    ):
        f.counter(name, text, alerts.get(key, 0))
    f.gauge("cockpit_alerts_queued", "Alerts waiting for delivery.", alerts.get("queued", 0))

    hb = snap["counters"].get("heartbeat")
    hb_rows: tuple[Any, ...] = ()
    if isinstance(hb, dict) and hb.get("target"):
        hb_rows = ((("ok",), hb["pings"]), (("failed",), hb["failures"]))
    f.counter(
        "cockpit_heartbeat_pings",
        "Outbound heartbeat pings, by result.",
        labels=("result",),
        rows=hb_rows,
    )
    # Only where something beats: a ping URL, or systemd's watchdog. systemd's notify alone
    # (Type=notify, no WatchdogSec) sends no beat to hold back, and a 0 read "beating".
    beats = isinstance(hb, dict) and bool(
        hb.get("target") or str(hb.get("systemd", "")).startswith("watchdog")
    )
    f.gauge(
        "cockpit_heartbeat_paused",
        "1 while the heartbeat is held back (engine unhealthy), 0 while it beats.",
        labels=(),
        rows=(((), int(bool(hb["paused"]))),) if beats and isinstance(hb, dict) else (),
    )
    f.gauge(
        "cockpit_heartbeat_last_ok_timestamp_seconds",
        "When the last heartbeat ping was answered (Unix time).",
        labels=(),
        rows=(((), hb["last_ok_ts"] / 1e9),) if isinstance(hb, dict) and hb["last_ok_ts"] else (),
    )
    return f.out


class MetricsSampler:
    """The companion that samples the engine on its event loop (see the module doc)."""

    def __init__(self, collector: SampleCollector, every_s: float = SAMPLE_EVERY_S) -> None:
        self.collector = collector
        self.every_s = every_s
        self.counts = EventCounts()
        self.lag = Buckets()
        self.errors = 0
        self.samples = 0  # taken so far, and the loop time they took (bench/metrics_scrape.py)
        self.cost_total_s = 0.0
        self._worst = 0.0  # since the previous sample
        # (time.monotonic(), worst lag) of the samples of the last LAG_WINDOW_S: the worst
        # served is theirs, so a scrape every few seconds still sees a stall between two.
        self._worsts: deque[tuple[float, float]] = deque()

    async def run(self, engine: Engine) -> None:
        watchers = engine.fanout.watchers
        if self.counts not in watchers:
            watchers.append(self.counts)
        clock = time.monotonic
        try:
            self.take(engine)
            due = clock() + self.every_s
            async for lag in loop_ticks(LAG_TICK_S):
                self.lag.observe(lag)
                if lag > self._worst:
                    self._worst = lag
                if clock() >= due:
                    due = clock() + self.every_s
                    self.take(engine)
        finally:
            self.take(engine, running=False)  # what the run ended with stays readable

    def take(self, engine: Engine, running: bool = True) -> None:
        """Sample the engine now (on the loop) and publish the sample to the collector."""
        if engine.core is None:
            return
        began = time.perf_counter()
        now = time.monotonic()
        worsts = self._worsts
        while worsts and worsts[0][0] < now - LAG_WINDOW_S:
            worsts.popleft()
        worst = max([self._worst, *(w for _, w in worsts)])
        try:
            snap: dict[str, Any] = dict(engine.snapshot(trace=0, curve=0))
            families = build_families(engine, snap, self.counts, self.lag, worst)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1:
                log.error(
                    "metrics: sampling the engine failed (%s: %s); later failures are counted "
                    "in cockpit_sampler_errors_total",
                    type(exc).__name__,
                    exc,
                )
            # The last good values stay (their age grows); the failure is counted at once.
            prev = self.collector.sample
            self.collector.publish(
                replace(prev, running=running, errors=self.errors)
                if prev is not None
                else Sample(time.monotonic(), 0.0, running, self.errors, ())
            )
            return
        worsts.append((now, self._worst))
        self._worst = 0.0
        cost = time.perf_counter() - began
        self.samples += 1
        self.cost_total_s += cost
        self.collector.publish(
            Sample(time.monotonic(), cost, running, self.errors, tuple(families))
        )


class SampleCollector:
    """A prometheus-client collector that emits the newest :class:`Sample` and nothing else:
    ``collect`` runs in the HTTP server's thread and reads only that frozen value."""

    def __init__(self) -> None:
        self._sample: Sample | None = None

    def publish(self, sample: Sample) -> None:
        self._sample = sample  # one reference, swapped whole: a reader sees one sample or the other

    @property
    def sample(self) -> Sample | None:
        return self._sample

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        sample = self._sample
        age = time.monotonic() - sample.taken if sample is not None else 0.0
        stale = age > STALE_AFTER_S
        yield GaugeMetricFamily(
            "cockpit_engine_running",
            "1 while the engine runs and is sampled; 0 before it started, after it ended, and "
            f"while its event loop is stuck (no sample for {STALE_AFTER_S:g} s).",
            value=int(sample is not None and sample.running and not stale),
        )
        yield CounterMetricFamily(
            "cockpit_sampler_errors",
            "Samples of the engine that failed.",
            value=sample.errors if sample is not None else 0,
        )
        if sample is None:
            return
        yield GaugeMetricFamily(
            "cockpit_sample_age_seconds",
            "Age of the values served; it grows while the event loop is stuck.",
            value=age,
        )
        yield GaugeMetricFamily(
            "cockpit_sampler_seconds",
            "How long the last sample held the event loop, seconds.",
            value=sample.cost_s,
        )
        for fam in sample.families:
            metric: Any
            if fam.kind == "histogram":
                metric = HistogramMetricFamily(fam.name, fam.help, labels=fam.labels)
                for lv, (buckets, total) in fam.rows:
                    metric.add_metric(
                        list(lv), [(floatToGoString(b), n) for b, n in buckets], total
                    )
            else:
                cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
                metric = cls(fam.name, fam.help, labels=fam.labels)
                for lv, value in fam.rows:
                    if stale and fam.name == "cockpit_heartbeat_paused":
                        value = 1.0  # beats go from the loop: none leaves while it is stuck
                    metric.add_metric(list(lv), value)
            yield metric


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (so nothing else can scrape it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The scrapers served at once, and how long one may take to send its request and read the
# answer. Past the first, a connection is closed at once: the server lives in the engine's
# process, and every connection held open is a thread and a file descriptor the engine needs
# (its journal, its control socket, its venues). Prometheus scrapes with one connection.
MAX_SCRAPERS = 8
SCRAPE_TIMEOUT_S = 10.0


def _metrics_server_class(host: str, port: int) -> tuple[type[Any], str]:
    """prometheus-client's threading WSGI server, bounded (see MAX_SCRAPERS), and the address
    to bind (the host's first passive address, as prometheus-client's own server picks it)."""
    import socket

    from prometheus_client.exposition import ThreadingWSGIServer

    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = info[0]

    class BoundedServer(ThreadingWSGIServer):
        address_family = family

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.slots = threading.BoundedSemaphore(MAX_SCRAPERS)
            self.refused = 0  # connections closed because every slot was taken
            self.cut = 0  # connections cut off at their deadline
            # The socket timeout bounds each read and write, not a whole exchange: a scraper
            # that sends (or reads) a byte at a time kept its slot for ever, and eight of them
            # kept Prometheus out. One reaper thread cuts every connection at its deadline.
            self._deadlines: dict[Any, float] = {}
            self._deadlines_lock = threading.Lock()
            self._closing = threading.Event()
            super().__init__(*args, **kwargs)
            threading.Thread(target=self._reap, name="metrics-reaper", daemon=True).start()

        def _reap(self) -> None:
            while not self._closing.wait(min(0.1, SCRAPE_TIMEOUT_S / 4)):
                now = time.monotonic()
                with self._deadlines_lock:
                    late = [r for r, at in self._deadlines.items() if at <= now]
                    for request in late:
                        del self._deadlines[request]
                for request in late:
                    self.cut += 1
                    with contextlib.suppress(OSError):
                        request.shutdown(socket.SHUT_RDWR)  # the handler's read or write ends

        def server_close(self) -> None:
            self._closing.set()
            super().server_close()

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.refused += 1
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            with self._deadlines_lock:
                self._deadlines[request] = time.monotonic() + SCRAPE_TIMEOUT_S
            try:
                super().process_request_thread(request, client_address)
            finally:
                with self._deadlines_lock:
                    self._deadlines.pop(request, None)
                self.slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out or went away: nothing to print on the engine's stderr

    return BoundedServer, str(sockaddr[0])


class MetricsServer:
    """prometheus-client's HTTP server on ``host:port`` (0: any free port) with the engine's
    collector and the process's own metrics (CPU, memory, open files). At most
    :data:`MAX_SCRAPERS` connections at once, each given :data:`SCRAPE_TIMEOUT_S`: a flood of
    idle connections cannot take the engine's threads and file descriptors."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.requested_port = port
        self.collector = SampleCollector()
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; OSError when the port is taken or the host cannot be bound."""
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

        class Handler(WSGIRequestHandler):
            timeout = SCRAPE_TIMEOUT_S  # the socket's timeout: a silent client is let go

            def log_message(self, *args: Any) -> None:
                pass  # one line per scrape would flood the engine's stderr

        registry = CollectorRegistry()
        registry.register(self.collector)
        ProcessCollector(registry=registry)
        server_class, addr = _metrics_server_class(self.host, self.requested_port)
        app = make_wsgi_app(registry)
        httpd = make_server(addr, self.requested_port, app, server_class, Handler)
        thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
        thread.start()
        self._httpd, self._thread = httpd, thread

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def sampler(self, every_s: float = SAMPLE_EVERY_S) -> MetricsSampler:
        """The companion that feeds this server (add it to ``engine.companions``)."""
        return MetricsSampler(self.collector, every_s)

    async def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        await asyncio.to_thread(httpd.shutdown)  # waits for serve_forever's poll to notice
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
