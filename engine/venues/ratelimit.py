"""Request pacing for one venue: a token bucket that keeps headroom for cancels, and backoff.

ccxt's own throttler (``enableRateLimit``) spaces requests by the exchange's ``rateLimit`` and
endpoint costs. This gate sits above it and adds what ccxt does not do:

* **A reserve for cancels.** Ordinary requests (orders, polls, look-ups) may only take a token
  while more than ``cancel_reserve`` are left; cancels may take the last ones. A busy poll loop or
  a burst of orders can therefore never leave the kill switch waiting for the bucket to refill.
* **A penalty box.** When the venue answers 429/418 or a rate-limit error, every request waits
  until the venue's ``Retry-After`` (or an exponential backoff when it gives none) has passed.
  New orders are not queued behind the penalty: the broker refuses them at once (their market has
  moved by then), so a storm of rate-limit answers cannot turn into a storm of requests.

Time comes from injected ``clock`` (monotonic seconds) and ``sleep`` functions, so tests can run
the same code on a virtual clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [base*2^n/2, base*2^n]."""

    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


MAX_RETRY_AFTER_S = 3600.0  # the longest wait a venue's answer may impose (a bad header: no more)


def clamp_retry_after(seconds: float) -> float:
    """A venue's "wait this long" as a usable wait: 0 for negative or NaN, at most an hour (an
    infinite or absurd value would block every request, cancels included, for good)."""
    if seconds != seconds or seconds < 0:
        return 0.0
    return min(seconds, MAX_RETRY_AFTER_S)


def parse_retry_after(value: str | None, now_epoch_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        now = time.time() if now_epoch_s is None else now_epoch_s
        seconds = when - now
    return clamp_retry_after(seconds)


def retry_after_from_headers(headers: dict[str, Any], now_ms: int) -> float | None:
    """Seconds to wait from a rate-limit answer's headers (standard and venue-specific)."""
    lower = {str(k).lower(): v for k, v in (headers or {}).items()}
    seconds = parse_retry_after(lower.get("retry-after"))
    if seconds is not None:
        return seconds
    reset_ms = lower.get("gw-ratelimit-reset")  # kucoin: milliseconds until the window resets
    if reset_ms is not None:
        try:
            return clamp_retry_after(float(reset_ms) / 1000.0)
        except ValueError:
            pass
    reset_at = lower.get("x-bapi-limit-reset-timestamp")  # bybit: epoch ms of the reset
    if reset_at is not None:
        try:
            return clamp_retry_after((float(reset_at) - now_ms) / 1000.0)
        except ValueError:
            pass
    return None


class RequestGate:
    """Token bucket (``rate_per_s``, ``burst``) with ``cancel_reserve`` tokens kept for cancels."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 5,
        cancel_reserve: int = 2,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff | None = None,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < cancel_reserve + 1:
            raise ValueError("burst must leave at least one token above the cancel reserve")
        self.rate = float(rate_per_s)
        self.burst = burst
        self.reserve = cancel_reserve
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self.blocked_until = 0.0
        self.backoff = backoff or Backoff(base_s=1.0, cap_s=120.0)
        self.penalties = 0  # how many rate-limit answers the venue gave
        self.sent = 0  # tokens handed out

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:  # after a penalty, _last sits at its end: no refill before it
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def blocked_for(self) -> float:
        """Seconds left in the penalty box (0 if not penalised)."""
        return max(0.0, self.blocked_until - self._clock())

    def available(self, cancel: bool = False) -> float:
        self._refill()
        return self._tokens - (0 if cancel else self.reserve)

    async def acquire(self, cancel: bool = False) -> None:
        """Wait for the penalty box and a token; cancels may use the reserve."""
        floor = 1.0 if cancel else 1.0 + self.reserve
        while True:
            wait = self.blocked_for()
            if wait > 0:
                await self._sleep(wait)
                continue
            self._refill()
            if self._tokens >= floor:
                self._tokens -= 1.0
                self.sent += 1
                return
            # At least a millisecond: float rounding must not turn this into a busy loop.
            await self._sleep(max((floor - self._tokens) / self.rate, 0.001))

    def try_acquire(self, cancel: bool = False) -> bool:
        """Take a token now if one is free (and no penalty holds); never waits."""
        if self.blocked_for() > 0:
            return False
        self._refill()
        floor = 1.0 if cancel else 1.0 + self.reserve
        if self._tokens >= floor:
            self._tokens -= 1.0
            self.sent += 1
            return True
        return False

    def penalize(self, retry_after_s: float | None) -> float:
        """The venue said "too many": block everything for Retry-After (or a backoff step).

        Returns the seconds blocked. The bucket is emptied too, so requests resume gently.
        """
        self.penalties += 1
        step = self.backoff.next_delay()
        wait = max(retry_after_s, 0.0) if retry_after_s is not None else step
        self.blocked_until = max(self.blocked_until, self._clock() + wait)
        self._tokens = min(self._tokens, 0.0)
        self._last = max(self._last, self.blocked_until)
        return wait

    def succeeded(self) -> None:
        """A request went through: the next penalty starts from the first backoff step."""
        self.backoff.reset()
