"""Orders through ccxt venue brokers (testnet, armed live): send, poll, reconcile, kill.

:class:`VenueExecution` is the engine's :class:`~engine.execution.Execution` for testnet and
live: one :class:`~engine.venues.ccxt_broker.CcxtBroker` per venue, a poll task bringing order
updates and fills back, and the venue duties around them. The order path is the engine's: an
intent is committed to the journal before its order is sent, and the safety gate is checked again
at the moment of sending; this part only routes the order to its venue's broker.

At start, after restoring the journal:

* every broker loads its markets (the instruments come from the venue);
* journaled open orders are tracked again, and orders whose intent was durable but never
  acknowledged (or still PENDING_NEW) are **recovered** by client order id, never resent;
* each venue is **reconciled** against the journal; a venue with unresolved blocking
  differences stays halted (its broker refuses submits) until the operator resolves them.

A kill switch at ``halt`` or ``flatten`` also cancels every open order on every venue and
confirms with the venue that none is left (``cancel_all``); the result is in :attr:`venue_kill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.commands import CommandResult
from engine.config import Config
from engine.core import CancelOrder
from engine.events import FillReceived, VenueChanged
from engine.execution import EngineHost, UnsupportedMode
from engine.restore import RestoredState
from engine.types import DepthUpdate, Fill, Instrument, Order, OrderStatus, OrderUpdate
from engine.venues.ccxt_broker import native_stops_problem
from engine.venues.exchanges import VenueStartError, describe_start_failure
from engine.venues.source import VenueSource
from engine.vocabulary import IntentOrigin, KillLevel, kill_at_least

if TYPE_CHECKING:
    from engine.sources import MarketSource

DEFAULT_POLL_S = 1.0
# A failed reconciliation (the venue did not answer) is tried again this often.
RECONCILE_RETRY_S = 30.0
# A feed that reconnects again and again is reconciled at most this often (each takes several
# requests from the venue's rate budget).
RECONCILE_MIN_GAP_S = 10.0
# Every venue is also reconciled this often, whatever its feeds do: an order or a trade placed
# by hand (the web UI, another program) while the engine runs must not wait for a reconnect
# (a healthy websocket reconnects about once a day) to halt the venue.
RECONCILE_EVERY_S = 300.0
# A kill whose cancels a venue did not confirm (it was down, rate limited, refused the keys)
# cancels there again this often, as long as the switch is engaged, until the venue confirms.
KILL_RETRY_S = 30.0
# How often the venue watch looks for a feed that reconnected, and for a clock check due.
VENUE_WATCH_S = 0.5


class VenueExecution:
    """Orders through ccxt brokers (testnet or armed live); see the module doc.

    ``broker_kwargs`` go to every :class:`CcxtBroker`; ``prepare`` is called with each broker
    right after it is built (before any request), e.g. to point it at a test server;
    ``poll_s`` is the broker poll period. (``feed_kwargs`` are the source's.)
    """

    name = "venues"
    serialized = True
    on_quote = None

    def __init__(
        self,
        cfg: Config,
        *,
        broker_kwargs: dict[str, Any] | None = None,
        prepare: Callable[[Any], None] | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.cfg = cfg
        self._host: EngineHost | None = None
        self.brokers: dict[str, Any] = {}
        self.source: VenueSource | None = None
        self.reconciliations: dict[str, Any] = {}
        self.venue_kill: dict[str, bool] = {}  # venue -> cancel_all confirmed at the last kill
        self.venue_kill_detail: dict[str, dict[str, Any]] = {}
        self._last_kill_try: dict[str, float] = {}  # monotonic time of each venue's last cancel
        self._kill_why: dict[str, str] = {}  # why the venue's last kill cancels are unconfirmed
        self.clock_offsets: dict[str, float] = {}  # venue -> our clock minus the venue's, ms
        self.venue_events = 0  # "venue" events published (a test figure)
        # Acknowledged differences (by venue, by key): a restart or a re-reconciliation that
        # finds the same difference again keeps the person's answer.
        self._acks: dict[str, dict[str, tuple[str, Any]]] = {}  # venue -> key -> (kind, answer)
        self._adopted: dict[str, dict[str, tuple[str, str | None, list[str]]]] = {}
        self._last_reconcile_try: dict[str, float] = {}
        self._resyncs_seen: dict[str, int] = {}  # feed resyncs already reconciled for
        self._last_journaled: dict[str, dict[str, Any]] = {}  # last reconciliation, restored
        self._fills: dict[str, list[Fill]] = {}  # every journaled fill, by venue
        self._baselines: dict[str, dict[str, Any]] = {}  # venue balances at the first look
        self._client_ids: dict[str, dict[str, Any]] = {}  # venue -> this session's token
        self._instruments: dict[str, Instrument] = {}
        self._fee_rate = 0.0
        self._deadman_stop = asyncio.Event()
        self._heartbeats: list[asyncio.Task[Any]] = []
        self._duties: list[asyncio.Task[Any]] = []  # the poll and the venue watch, while running
        self.poll_errors = 0
        self._broker_kwargs = dict(broker_kwargs or {})
        self._prepare = prepare
        self.poll_s = poll_s

    @property
    def host(self) -> EngineHost:
        assert self._host is not None, "VenueExecution used before Engine attached it"
        return self._host

    def attach(self, host: EngineHost) -> None:
        self._host = host

    def on_depth(self, depth: DepthUpdate) -> None:
        return None  # the venue fills our orders from its own book

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Build one broker per venue and load its markets; a venue that does not answer
        fails the start in one line (nothing is sent)."""
        from engine.venues.ccxt_broker import BrokerConfigError
        from engine.venues.exchanges import VenueUnavailable
        from engine.venues.factory import build_brokers

        try:
            self.brokers = brokers = build_brokers(self.cfg, **self._broker_kwargs)
        except (BrokerConfigError, VenueUnavailable) as exc:
            raise UnsupportedMode(str(exc)) from None
        if self._prepare is not None:
            for broker in brokers.values():
                self._prepare(broker)
        starting = "a venue"  # the venue a failure is about, named in the one line
        try:
            for name, broker in brokers.items():
                starting = name
                for sym, inst in (await broker.start()).items():
                    self._instruments.setdefault(sym, inst)
                for meta in broker.metas.values():
                    self._fee_rate = max(self._fee_rate, float(meta.taker_fee or 0.0))
            if not self._instruments:
                raise UnsupportedMode("no venue offers any of the strategies' symbols")
            if self.cfg.engine.mode == "live" and self.host.restored.starting_cash is None:
                await self._check_funds()
            for name, broker in brokers.items():
                problem = (
                    native_stops_problem(broker.exchange)
                    if self.cfg.venues[name].native_stops
                    else ""
                )
                if problem:
                    raise UnsupportedMode(
                        f"venues.{name}.native_stops = true, but {problem}; set native_stops "
                        "= false (its stops stay engine-side)"
                    )
        except BaseException as exc:
            await self.close()
            if isinstance(exc, BrokerConfigError | VenueUnavailable):
                raise UnsupportedMode(str(exc)) from None
            if isinstance(exc, Exception) and type(exc).__module__.startswith("ccxt"):
                # The venue did not answer at start: say so, fail closed, never trade blind.
                def redact(text: str) -> str:
                    for b in brokers.values():
                        text = b.redactor.text(text)
                    return text

                raise VenueStartError(describe_start_failure(exc, starting, redact)) from None
            raise

    async def _check_funds(self) -> None:
        """Live mode's first start: the engine's equity begins at ``portfolio.starting_cash``
        (a figure of the config), and every limit in % of equity is measured against it. Above
        what the venues hold in the quote currency, those limits count money the account does
        not have: 100,000 USDT (the default) over a 2,000 USDT account made the 5% daily loss
        limit 5,000 USDT, more than the account could lose. Refused before anything is sent."""
        cfg = self.cfg
        ccy, cash = cfg.portfolio.quote_currency, cfg.portfolio.starting_cash
        held = {name: await b.balance_total(ccy) for name, b in self.brokers.items()}
        # Two sections on one account (the same exchange and key) hold its money once.
        accounts: dict[tuple[str, str | None], float] = {}
        for name, value in held.items():
            vcfg = cfg.venues[name]
            accounts[(vcfg.exchange, vcfg.api_key_env)] = value
        total = sum(accounts.values())
        if total >= cash * (1.0 - 1e-9):
            return
        where = ", ".join(f"{name} {value:,.2f}" for name, value in sorted(held.items()))
        raise UnsupportedMode(
            f"portfolio.starting_cash is {cash:,.2f} {ccy}, but the venues hold {total:,.2f} "
            f"{ccy} ({where}): every limit in % of equity (the kill switch's daily loss and "
            "drawdown, position and exposure fractions, sizing) would count money the account "
            f"does not have; set portfolio.starting_cash to the {ccy} this engine may trade, "
            f"at most {total:,.2f}"
        )

    def venue_exchanges(self) -> dict[str, Any]:
        return {name: broker.exchange for name, broker in self.brokers.items()}

    def instruments(self) -> dict[str, Instrument]:
        return dict(self._instruments)

    def bind(self, source: MarketSource, instruments: dict[str, Instrument]) -> None:
        """Each broker refuses orders while its venue's feed is unsynced."""
        if not isinstance(source, VenueSource):
            raise UnsupportedMode(
                f"{self.cfg.engine.mode} mode trades on the venues' own market data "
                '([market] source = "venue")'
            )
        self.source = source
        for name, broker in self.brokers.items():
            synced = source.is_synced(name)
            if synced is not None:
                broker.is_synced = synced
                self._resyncs_seen[name] = source.resyncs(name)

    def fee_rate(self) -> float:
        return self._fee_rate or 0.001

    def slippage_model(self) -> Callable[..., float] | None:
        return None

    def live_at_restore(self, restored: RestoredState) -> list[Order]:
        # Until resolved, an unacknowledged order counts as live for exposure.
        return [*restored.open_orders, *restored.unacknowledged]

    def restore(self, restored: RestoredState, now: int) -> None:
        core = self.host.core
        if core is not None:  # where protective stops rest at the venue (native_stops)
            core.spot_venues = frozenset(self.brokers)  # every ccxt venue trades spot
            core.native_stop_venues = {
                name: self.cfg.venues[name].native_stop_limit_bps * 1e-4
                for name in self.brokers
                if self.cfg.venues[name].native_stops
            }
        acknowledged = [o for o in restored.open_orders if o.status is not OrderStatus.PENDING_NEW]
        self._restore_venue_answers(restored)
        for name, broker in self.brokers.items():
            broker.restore(
                [o for o in acknowledged if o.venue == name],
                [f for f in restored.fills if f.venue == name],
                adopted=self._adopted.get(name, {}),
                journaled=restored.orders,
            )

    async def resume(self, restored: RestoredState, now: int) -> None:
        """Durable intents the venue never acknowledged (to our knowledge) are looked up by
        client order id, never resent; then every venue is reconciled and its clock checked."""
        core = self.host.core
        assert core is not None
        pending = [o for o in restored.open_orders if o.status is OrderStatus.PENDING_NEW]
        for name, broker in self.brokers.items():
            todo = [o for o in [*restored.unacknowledged, *pending] if o.venue == name]
            if todo:
                await self.host.handle(core.on_broker(await broker.recover(todo)))
        for name in self.brokers:
            await self.reconcile(name, restored)
        for name in self.brokers:
            await self.check_clock(name)

    def session_info(self) -> dict[str, Any]:
        names = sorted(self.brokers)
        exchanges = {name: self.cfg.venues[name].exchange for name in names}
        # The prefix each venue's client order ids were made with: the journal's open orders
        # are found at the venue by ids made with it (engine.modes.journal_binding_problem).
        prefixes = {name: self.cfg.venues[name].client_id_prefix for name in names}
        return {
            "broker": "venues",
            "venues": names,
            "exchanges": exchanges,
            "client_id_prefixes": prefixes,
        }

    def _restore_venue_answers(self, restored: RestoredState) -> None:
        """The journal's earlier answers to reconciliation differences: adopted orders (so the
        broker knows their venue ids again) and acknowledged differences; the balance
        baselines; the fills by venue."""
        from engine.venues.reconcile import ORDER_STATE, UNKNOWN_ORDER, Resolution, adopted_order_id

        for fill in restored.fills:
            self._fills.setdefault(fill.venue, []).append(fill)
        for ev in restored.venue_events:
            if ev.get("what") == "baseline":
                self._baselines.setdefault(str(ev.get("venue", "")), ev.get("detail") or {})
            if ev.get("what") != "resolved":
                continue
            venue = str(ev.get("venue", ""))
            detail = ev.get("detail") or {}
            res, diff = detail.get("resolution") or {}, detail.get("difference") or {}
            if res.get("action") == "acknowledge":
                self._acks.setdefault(venue, {})[res["key"]] = (
                    str(diff.get("kind", "")),
                    Resolution(**res),
                )
            elif res.get("action") == "adopt" and diff.get("kind") in (UNKNOWN_ORDER, ORDER_STATE):
                order = (diff.get("detail") or {}).get("order") or {}
                vid = str(order.get("venue_order_id", ""))
                if vid:
                    self._adopted.setdefault(venue, {})[adopted_order_id(venue, vid)] = (
                        vid,
                        order.get("client_id"),
                        list(detail.get("known_fill_ids") or []),
                    )
        self._draw_client_id_tokens(restored)
        for ev in restored.venue_events:  # the last word per venue on what is unanswered
            rec = (ev.get("detail") or {}).get("reconciliation")
            if ev.get("what") in ("reconciled", "resolved") and rec:
                self._last_journaled[str(ev.get("venue", ""))] = rec

    def _draw_client_id_tokens(self, restored: RestoredState) -> None:
        """Each session's own part of the client ids it sends (see ``CcxtBroker.venue_client_id``).

        The engine's ids (``ck-<session>-<n>``) repeat: in every new data directory, and when
        an older copy of one is started again. A venue account outlives both, and a look-up by
        client id must never find an order another journal (or a lost later session) sent: a
        timed-out send would adopt its fills. So every session draws a random token per venue,
        journaled with the session's reconciliations (the first one comes before any order
        can go out), and earlier sessions' tokens are restored from them. Sessions from before
        tokens keep their ids as they were, so their orders are still found."""
        core = self.host.core
        assert core is not None
        earlier: dict[str, dict[int, str]] = {}
        for ev in restored.venue_events:
            mark = (ev.get("detail") or {}).get("client_ids")
            if ev.get("what") == "reconciled" and isinstance(mark, dict):
                venue = str(ev.get("venue", ""))
                earlier.setdefault(venue, {})[int(mark["session"])] = str(mark["token"])
        alphabet = string.ascii_lowercase + string.digits
        for name, broker in self.brokers.items():
            token = "".join(secrets.choice(alphabet) for _ in range(6)) + "-"
            broker.session_tokens = {**earlier.get(name, {}), core.session: token}
            self._client_ids[name] = {"session": core.session, "token": token}

    async def _set_venue(self, venue: str, what: str, halted: str, detail: dict[str, Any]) -> None:
        """Apply a venue's halt (broker and core) and journal why, durably."""
        core = self.host.core
        assert core is not None
        self.brokers[venue].set_halted(halted or None)
        core.set_venue_halt(venue, halted or None)
        self.venue_events += 1
        await self.host.publish([VenueChanged(core.now, venue, what, halted, detail)], durable=True)

    async def reconcile(
        self,
        venue: str,
        restored: RestoredState | None = None,
        *,
        trigger: str = "start",
        retries: int | None = None,
    ) -> Any:
        """Compare the venue with the journal; the venue stays HALTED while a blocking
        difference has no answer from a person. Journaled either way.

        Orders whose send outcome is still unknown are looked up first (their trades would
        otherwise read as trades of an unknown order). A blocking difference that drops out of
        the venue's recent-trades window stays until someone answers it."""
        from engine.venues.reconcile import (
            UNJOURNALED_FILL,
            Difference,
            JournalSnapshot,
            build,
            expected_balances,
        )

        broker, core = self.brokers[venue], self.host.core
        assert core is not None
        restored = restored or self.host.restored
        try:
            items = await broker.poll(retries=retries)
        except Exception:
            items = []
        if items:
            await self.host.handle(core.on_broker(items))
        open_orders = tuple(o for o in core.open_orders.values() if o.venue == venue)
        fills = tuple(self._fills.get(venue, ()))
        client_ids, venue_ids = broker.client_ids(), broker.venue_order_ids()
        known = {
            *(o.client_order_id for o in restored.open_orders),
            *(o.client_order_id for o in restored.unacknowledged),
            *(f.client_order_id for f in fills),
            *core.open_orders,
            *client_ids.values(),
            *venue_ids.values(),
        }
        self._last_reconcile_try[venue] = time.monotonic()
        try:
            snap = await broker.snapshot(retries=retries)
        except Exception as exc:
            why = broker.redactor.error(exc)
            reason = (
                f"{venue}: reconciliation failed ({why}); nothing is sent there until one "
                f"succeeds (retried every {RECONCILE_RETRY_S:g} s)"
            )
            self.reconciliations[venue] = None
            await self._set_venue(
                venue,
                "reconciled",
                reason,
                {"trigger": trigger, "error": why, "client_ids": self._client_ids.get(venue)},
            )
            return None
        baseline = self._baselines.get(venue)
        if baseline is None:
            # The first look at this account: its balances are the baseline the journal's
            # fills move from (the engine's own cash figure is a paper number).
            baseline = {"balances": dict(snap.balances), "ts": snap.taken_ns}
            self._baselines[venue] = baseline
            await self.host.publish(
                [VenueChanged(core.now, venue, "baseline", broker.halted_reason, baseline)],
                durable=True,
            )
        after = [f for f in fills if f.ts > int(baseline["ts"])]
        expected = expected_balances(baseline["balances"], after, broker.assets_of)
        journal = JournalSnapshot(
            open_orders, fills, client_ids, venue_ids, frozenset(known), expected
        )
        rec = build(snap, journal)
        previous = self.reconciliations.get(venue)
        before = previous.to_dict() if previous is not None else self._last_journaled.get(venue)
        if before:
            answered = {r["key"] for r in before.get("resolutions", [])}
            now_keys = {d.key for d in rec.differences}
            journaled = {(f.fill_id, f.symbol) for f in fills}
            carried = tuple(
                Difference(
                    **{
                        **d,
                        "line": d["line"].split(" (kept until answered")[0]
                        + " (kept until answered: no longer in the venue's recent trades)",
                    }
                )
                for d in before.get("differences", [])
                if d["kind"] == UNJOURNALED_FILL
                and d["blocking"]
                and d["key"] not in answered
                and d["key"] not in now_keys
                and (d["key"], (d.get("detail") or {}).get("trade", {}).get("symbol"))
                not in journaled
            )
            if carried:
                rec = replace(rec, differences=(*carried, *rec.differences))
        acks = self._acks.get(venue, {})
        kept = tuple(
            acks[d.key][1]
            for d in rec.differences
            if d.key in acks and acks[d.key][0] == d.kind  # the same key, the same problem
        )
        if kept:
            rec = replace(rec, resolutions=kept)
        self.reconciliations[venue] = rec
        if (
            trigger == "periodic"
            and previous is not None
            and previous.differences == rec.differences
            and previous.resolutions == rec.resolutions
            and broker.halted_reason == rec.halt_reason()
        ):
            return rec  # nothing new: not journaled again every few minutes
        await self._set_venue(
            venue,
            "reconciled",
            rec.halt_reason(),
            {
                "trigger": trigger,
                "reconciliation": rec.to_dict(),
                "client_ids": self._client_ids.get(venue),
            },
        )
        return rec

    async def check_clock(self, venue: str) -> float | None:
        """Measure our clock against the venue's and feed the clock-drift breaker the worst
        offset of all venues. A failed measurement is a problem shown, not a halt (the feeds'
        staleness covers a venue that does not answer)."""
        broker, core = self.brokers[venue], self.host.core
        assert core is not None
        try:  # measured outside the command lock: only the result goes through it
            offset = await broker.clock_offset_ms()
        except Exception as exc:
            broker.problems.append(f"clock check: {broker.redactor.error(exc)}")
            return None
        if offset is None:
            return None
        self.clock_offsets[venue] = offset
        worst = max(self.clock_offsets.values(), key=abs)
        async with self.host.command_lock:  # (never called with the lock held)
            await self.host.handle(core.on_clock_drift(worst))
        return offset

    async def close(self) -> None:
        for broker in self.brokers.values():
            with contextlib.suppress(Exception):
                await broker.close()

    # ------------------------------------------------------------------ running

    def start_tasks(self) -> None:
        """The broker poll, the venue watch, and each venue's dead-man heartbeat."""
        self._deadman_stop = stop = asyncio.Event()
        self._heartbeats = [
            asyncio.create_task(
                broker.keep_deadman_armed(
                    stop,
                    interval_s=self.cfg.venues[name].deadman_s / 3,
                    timeout_s=self.cfg.venues[name].deadman_s,
                )
            )
            for name, broker in self.brokers.items()
            if broker.has_deadman and self.cfg.venues[name].deadman_s > 0
        ]
        self._duties = [
            asyncio.create_task(self.poll_loop()),
            asyncio.create_task(self.venue_watch()),
        ]

    async def stop_tasks(self, clean: bool) -> None:
        tasks, self._duties = self._duties, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if clean:
            self._deadman_stop.set()  # each heartbeat task disarms its venue's switch and ends
        else:  # died of an error: leave the switch armed, the venue cancels on its timer
            for task in self._heartbeats:
                task.cancel()
        for task in self._heartbeats:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5.0)
        self._heartbeats = []

    async def venue_watch(self) -> None:
        """Reconcile a venue again after its feed reconnected, after a failed attempt and every
        RECONCILE_EVERY_S, and check the clocks when due. Each runs under the command lock, so
        no order is in flight between the venue's snapshot and the journal's."""
        seen = self._resyncs_seen
        next_clock = {
            name: time.monotonic() + self.cfg.venues[name].clock_check_s for name in self.brokers
        }
        while not self.host.stopping:
            await asyncio.sleep(VENUE_WATCH_S)
            now = time.monotonic()
            # Each duty of each venue fails on its own: a reconciliation failing at every
            # round must not end the round before the kill's cancels are tried again (there,
            # or at any venue after it).
            for name in self.brokers:
                await self._watch_duty(self._watch_reconcile(name, now, seen))
                await self._watch_duty(self._watch_kill(name, now))
                if now >= next_clock.get(name, now):
                    next_clock[name] = now + self.cfg.venues[name].clock_check_s
                    await self._watch_duty(self.check_clock(name))

    async def _watch_duty(self, duty: Awaitable[Any]) -> None:
        try:
            await duty
        except Exception as exc:
            # The kill's retried cancels, the reconciliations and the clock checks are the
            # watch's: ended unseen by an error, none would run again.
            self.host.block(f"the venue watch failed ({self._why(exc)}); no orders are sent")

    def _why(self, exc: BaseException) -> str:
        """An error of the poll or the watch for the blocked reason: on one line, short, every
        venue's secrets masked (it may carry a signed request's URL; the reason is shown in
        every view, the journal and the alerts)."""
        text = f"{type(exc).__name__}: {exc}"
        for broker in self.brokers.values():
            redactor = getattr(broker, "redactor", None)
            if redactor is not None:
                text = redactor.text(text)
        text = " ".join(text.split())
        return text if len(text) <= 200 else text[:197] + "..."

    async def _watch_reconcile(self, name: str, now: float, seen: dict[str, int]) -> None:
        source = self.source
        resyncs = source.resyncs(name) if source is not None else 0
        trigger = ""
        since = now - self._last_reconcile_try.get(name, 0.0)
        gate = getattr(self.brokers[name], "gate", None)
        if gate is not None and gate.blocked_for() > 0:
            # The venue's Retry-After runs: a snapshot now would wait it out under the command
            # lock (the kill switch's cancels and reply behind it, up to an hour for a 418
            # ban). Asked once the wait is over (a reconnect stays pending).
            return
        if resyncs > seen.get(name, 0) and since >= RECONCILE_MIN_GAP_S:
            # A flapping feed reconciles at most every RECONCILE_MIN_GAP_S; the last
            # reconnect of a burst is never skipped, only delayed.
            seen[name] = resyncs
            trigger = "reconnect"
        elif (
            name in self.reconciliations
            and self.reconciliations[name] is None
            and since >= RECONCILE_RETRY_S
        ):
            trigger = "retry"
        elif since >= RECONCILE_EVERY_S:
            trigger = "periodic"
        if trigger:
            async with self.host.command_lock:  # no retries: a kill waits for one request
                await self.reconcile(name, trigger=trigger, retries=0)

    async def _watch_kill(self, name: str, now: float) -> None:
        core = self.host.core
        if (
            core is None
            or self.venue_kill.get(name) is not False
            or not kill_at_least(core.safety.kill.level, KillLevel.HALT)
            or now - self._last_kill_try.get(name, 0.0) < KILL_RETRY_S
        ):
            return
        try:
            async with self.host.command_lock:
                # One look first: a venue still down costs one request (one timeout) under
                # the lock, not a whole cancel-all of them.
                if await self.brokers[name].answers():
                    await self._kill_venues([name], retries=0)
        finally:
            self._last_kill_try[name] = time.monotonic()

    async def poll_loop(self) -> None:
        while not self.host.stopping:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except Exception as exc:
                # What the venue said was not all applied: the engine's orders, positions and
                # cash may be wrong from here on, so nothing more is sent (fail closed, as when
                # the main loop stops); the poll goes on (fills booked, cancels asked again).
                # It ended the task, unseen, and the engine traded on with no poll at all.
                self.poll_errors += 1
                self.host.block(f"the venue poll failed ({self._why(exc)}); no orders are sent")

    async def poll_once(self) -> None:
        """One poll of every broker, its updates and fills applied under the command lock."""
        core = self.host.core
        if core is None:
            return
        async with self.host.command_lock:
            for broker in self.brokers.values():
                try:
                    items = await broker.poll(retries=0)
                except Exception:
                    self.poll_errors += 1
                    continue
                if items:
                    await self.host.handle(core.on_broker(items))

    # ------------------------------------------------------------------ orders

    def observe(self, items: list[Any]) -> None:
        """Every journaled fill, by venue (a reconciliation compares the venue with them)."""
        for it in items:
            if type(it) is FillReceived:
                self._fills.setdefault(it.fill.venue, []).append(it.fill)

    async def after_kill(self) -> None:
        """Cancel everything at every venue (confirmed), before any flatten order goes out."""
        await self._kill_venues()

    def kill_shortfall(self) -> str:
        """What the kill switch's cancels left unconfirmed ("" when every venue confirmed):
        said in the kill's reply, so nobody reads "engaged" as "nothing works at the venue"."""
        core = self.host.core
        if core is None or not kill_at_least(core.safety.kill.level, KillLevel.HALT):
            return ""
        lines = []
        for name in sorted(self.brokers):
            if self.venue_kill.get(name) is False:
                why = self._kill_why.get(name) or "no answer"
                lines.append(
                    f"{name}: cancels NOT confirmed, orders may still be open there ({why}); "
                    f"tried again every {KILL_RETRY_S:g}s while the switch is engaged"
                )
        return "; ".join(lines)

    async def _kill_venues(
        self, names: list[str] | None = None, retries: int | None = None
    ) -> None:
        core = self.host.core
        if core is None or not kill_at_least(core.safety.kill.level, KillLevel.HALT):
            return
        chosen = [(n, b) for n, b in self.brokers.items() if names is None or n in names]
        started = time.monotonic()
        before = {name: len(broker.problems) for name, broker in chosen}

        async def cancel(name: str, broker: Any) -> bool:
            self._last_kill_try[name] = started
            try:
                return bool(await broker.cancel_all(retries=retries))
            except Exception as exc:
                broker.problems.append(f"cancel all: {broker.redactor.error(exc)}")
                return False

        async def poll(broker: Any) -> list[Any]:
            try:
                return list(await broker.poll(retries=retries))
            except Exception:
                return []

        # Every venue at once: one that does not answer (down, rate limited, its requests
        # timing out and retried) must not hold back the cancels at the others.
        results = await asyncio.gather(*(cancel(name, broker) for name, broker in chosen))
        for (name, broker), confirmed in zip(chosen, results, strict=True):
            self.venue_kill[name] = confirmed
            problems = list(broker.problems)[before[name] :]
            self._kill_why[name] = "; ".join(problems[-3:])
            detail = {
                "confirmed": confirmed,
                "ts": core.now,
                "detail": "no open order left at the venue (confirmed)"
                if confirmed
                else "NOT confirmed: orders may still be open at the venue; "
                + ("; ".join(problems[-3:]) or "check the venue"),
            }
            self.venue_kill_detail[name] = detail
            self.venue_events += 1
            await self.host.publish(
                [VenueChanged(core.now, name, "kill", broker.halted_reason, detail)], durable=True
            )
        for items in await asyncio.gather(*(poll(broker) for _, broker in chosen)):
            if items:
                await self.host.handle(core.on_broker(items))

    async def submit(self, order: Order, now: int) -> list[Any]:
        """Route a durable, still-allowed order to its venue's broker (write-ahead and the
        safety re-check are the engine's)."""
        broker = self.brokers.get(order.venue)
        if broker is None:
            order.move_to(
                OrderStatus.REJECTED,
                order.ts_updated,
                f"not sent: no broker for venue {order.venue!r}",
            )
            return [OrderUpdate(order, order.ts_updated)]
        core = self.host.core
        assert core is not None
        safety = core.safety
        state = safety.trading_state  # as the engine's send-time check just passed it

        intent = getattr(self.host, "sending", {}).get(order.client_order_id)

        def still_allowed(o: Order) -> str | None:
            # The order may wait for a request token; a kill latches meanwhile without the
            # lock. Once the state changed, the engine's send-time gate is asked again: only
            # what it lets through in the new state goes (at a halt, the kill's own flatten
            # and protective exits; never a strategy's close a person approved before it).
            now_state = safety.trading_state
            if now_state is state:
                return None
            if o.reduce_only and (intent is None or intent.origin == IntentOrigin.FLATTEN):
                return None  # the kill's own flatten (the send-time check sized it)
            if intent is not None:
                why = core.send_refusal(intent)
                return None if why is None else f"{why} (since the order was checked)"
            k = safety.kill
            cause = f": kill switch ({k.level}) by {k.by}: {k.reason}" if k.engaged else ""
            return f"engine {now_state.name} since the order was checked{cause}"

        out = list(await broker.submit(order, still_allowed))
        if broker.markets_stale:
            await self._refresh_markets(broker)
        return out

    async def _refresh_markets(self, broker: Any) -> None:
        """The venue refused an order as invalid: take its current precision and limits, so
        the next orders (protective exits and the kill's flatten too) are sized to them."""
        core = self.host.core
        assert core is not None
        try:
            changed = await broker.refresh_markets()
        except Exception as exc:
            broker.problems.append(f"reload markets: {broker.redactor.error(exc)}")
            return
        for sym, inst in changed.items():
            self._instruments[sym] = inst
            core.instruments[sym] = inst

    async def cancel(self, cancel: CancelOrder, now: int) -> list[Any]:
        core = self.host.core
        assert core is not None
        order = core.open_orders.get(cancel.client_order_id)
        broker = self.brokers.get(order.venue) if order is not None else None
        if broker is None:
            return []
        return list(await broker.cancel(cancel.client_order_id, cancel.reason))

    # ------------------------------------------------------------------ a person's answers

    async def command(self, name: str, args: Any, *, by: str) -> CommandResult:
        return await self._resolve(args.venue, args.key, args.action, args.reason, by)

    async def _resolve(self, venue: str, key: str, action: str, reason: str, by: str) -> Any:
        """Answer one reconciliation difference: adopt or cancel an unknown order, adopt or
        acknowledge an unknown fill, acknowledge a balance. The venue's action comes first (a
        cancel the venue refuses is not recorded as done); then the answer is journaled."""
        from engine.venues.reconcile import (
            BALANCE_MISMATCH,
            ORDER_STATE,
            UNJOURNALED_FILL,
            UNKNOWN_ORDER,
            ResolutionError,
            VenueOrder,
            VenueTrade,
            fill_id_for,
        )

        core = self.host.core
        assert core is not None
        broker = self.brokers.get(venue)
        if broker is None:
            known = ", ".join(sorted(self.brokers)) or "none"
            return CommandResult(False, f"unknown venue {venue!r}; known: {known}")
        rec = self.reconciliations.get(venue)
        if rec is None:
            return CommandResult(
                False,
                f"{venue} has no reconciliation to answer "
                f"({broker.halted_reason or 'none has run'}); wait for the next attempt",
            )
        diff = next((d for d in rec.differences if d.key == key), None)
        if diff is None:
            keys = ", ".join(d.key for d in rec.unresolved()) or "none"
            return CommandResult(False, f"{venue} has no difference {key!r}; unresolved: {keys}")
        done = next((r for r in rec.resolutions if r.key == key), None)
        if done is not None:
            return CommandResult(
                False, f"{venue} {key} was already answered ({done.action} by {done.by})"
            )
        if not diff.blocking and not (diff.kind == BALANCE_MISMATCH and action == "acknowledge"):
            # e.g. a trade of one of our own orders: the broker books it; a person's "adopt"
            # would book it a second time under another id.
            return CommandResult(
                False,
                f"{venue} {key} needs no answer ({diff.kind.replace('_', ' ')}, not blocking; "
                "the engine settles it by itself)",
            )
        try:
            new = rec.resolve(key, action, by=by, ts=core.now, note=reason)
        except ResolutionError as exc:
            return CommandResult(False, f"{exc}")
        what = diff.kind.replace("_", " ")
        adopted_known: list[str] = []
        if diff.kind in (UNKNOWN_ORDER, ORDER_STATE):
            vo = VenueOrder(**diff.detail["order"])
            if action == "cancel":
                if not await broker.cancel_venue_order(vo):
                    last = broker.problems[-1] if broker.problems else "no answer"
                    # It may have filled meanwhile: look again, so what is shown is current.
                    await self.reconcile(venue, trigger="cancel refused")
                    return CommandResult(
                        False,
                        f"{venue} did not cancel order {vo.venue_order_id} ({last}); "
                        f"{venue} stays HALTED; see the venue's differences again",
                    )
                message = f"{venue}: order {vo.venue_order_id} canceled at the venue"
            else:
                known_fills = [
                    fill_id_for(venue, d.detail["trade"]["trade_id"])
                    for d in rec.differences
                    if d.kind == UNJOURNALED_FILL
                    and d.detail["trade"].get("venue_order_id") == vo.venue_order_id
                ]
                update = broker.adopt(vo, known_fill_ids=known_fills)
                adopted_known = known_fills
                await self.host.handle(core.on_broker([update]))
                message = (
                    f"{venue}: order {vo.venue_order_id} adopted as "
                    f"{update.order.client_order_id}; the engine manages it from now on"
                )
        elif diff.kind == UNJOURNALED_FILL and action == "adopt":
            vt = VenueTrade(**diff.detail["trade"])
            fill = broker.take_fill(vt)
            await self.host.handle(core.on_broker([fill]))
            message = (
                f"{venue}: trade {vt.trade_id} ({vt.symbol} {vt.side} {vt.qty:g}) taken into "
                "the position"
            )
        else:
            message = f"{venue}: {what} {key} acknowledged"
            self._acks.setdefault(venue, {})[key] = (diff.kind, new.resolutions[-1])
        self.reconciliations[venue] = new
        left = len(new.unresolved())
        # The halt lifts only on a fresh look at the venue, never on answers alone.
        halted = new.halt_reason() or f"{venue}: every difference answered; looking again"
        await self._set_venue(
            venue,
            "resolved",
            halted,
            {
                "resolution": {
                    "key": key,
                    "action": action,
                    "by": by,
                    "ts": core.now,
                    "note": reason,
                },
                "difference": diff.to_dict(),
                "reconciliation": new.to_dict(),
                "known_fill_ids": adopted_known,
            },
        )
        if left:
            message += f"; {left} blocking difference(s) left, {venue} stays HALTED"
        else:
            fresh = await self.reconcile(venue, trigger="answered")
            halted = broker.halted_reason
            if fresh is not None and not halted:
                message += f"; {venue} reconciled again, trading there may resume"
            else:
                message += f"; looked at {venue} again: still HALTED ({halted})"
        return CommandResult(
            True, message, before={"halted": rec.halt_reason()}, after={"halted": halted}
        )

    # ------------------------------------------------------------------ views

    def venues_view(self, source: MarketSource) -> dict[str, Any]:
        feeds = source.status()
        venues: dict[str, Any] = {}
        for name, broker in self.brokers.items():
            rec = self.reconciliations.get(name)
            status = feeds.get(name) or {}
            synced = all(s["synced"] for s in status.get("symbols", {}).values())
            venues[name] = {
                "connected": bool(status) and synced,
                "detail": broker.halted_reason or ("synced" if synced else "unsynced"),
                "halted": broker.halted_reason,
                "feed": status,
                "reconciliation": rec.to_dict() if rec is not None else None,
                "problems": list(broker.problems)[-10:],
                "status_anomalies": broker.status_anomalies,
                "clock_offset_ms": self.clock_offsets.get(name),
                "deadman": dict(broker.deadman) if broker.has_deadman else None,
                "kill": self.venue_kill_detail.get(name),
            }
        return venues
