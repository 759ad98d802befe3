"""Traffic shaping for outbound delivery: per-stream lanes and per-destination backoff.

Streams (issue 18): every queue item carries its stream ("" for ordinary mail). Each
stream has its own connection limits per destination and in total, so a 10,000-message
newsletter that holds every bulk connection to a domain never makes a password reset
wait for one (the claim order in the store already puts higher priorities first).

Backoff: receivers that want us to slow down answer ``421`` (RFC 5321 §3.8, "service not
available, closing transmission channel"), or a 4xx whose text says so (Gmail's
``421-4.7.28``, Outlook's ``451 4.7.500 ... too many``, Yahoo's ``TSS04`` deferrals). Like
bulk MTAs and TCP congestion control (additive increase, multiplicative decrease), a
throttling reply halves the destination's connections and doubles the pause between two
messages; every ``recover`` deliveries in a row take one step back (the pause halves,
one connection more; or each second of deliveries without one, whichever comes first)
until the configured limits are reached again.

``Shaper`` is sans-IO (the caller passes the clock); ``Gate`` counts connections.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pochta.proto.smtp.client import ServerReply

_THROTTLE_WORDS = ("rate limit", "rate-limit", "ratelimit", "throttl", "too many",
                   "try again later", "slow down", "temporarily deferred", "tss04")


def is_throttle(reply: ServerReply) -> bool:
    """A reply that asks us to slow down: any 421, or a 4xx that says so."""
    if reply.code == 421:
        return True
    if not reply.transient:
        return False
    text = reply.text.lower()
    return any(word in text for word in _THROTTLE_WORDS)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """One stream's limits (``[[sending.stream_limits]]``); 0 takes ``[queue]``'s."""

    connections: int = 0  # per destination ([queue] per_destination)
    rate: float = 0.0  # messages per minute per destination ([queue] per_destination_rate)
    concurrency: int = 0  # connections in total ([queue] concurrency)


class Shaper:
    """One destination's adaptive limits. ``allowed`` connections (at most ``base``) and
    ``delay`` seconds between the starts of two messages (0: no pause)."""

    def __init__(self, base: int, *, first_delay: float = 0.05, max_delay: float = 30.0,
                 recover: int = 20, recover_seconds: float = 1.0) -> None:
        self.base = max(1, base)
        self.allowed = self.base
        self.delay = 0.0
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.recover = recover
        self.recover_seconds = recover_seconds
        self._last_step = float("-inf")
        self.successes = 0
        self.throttles = 0  # counted slowdowns (for logs and tests)
        self._last_throttle = float("-inf")
        self._next_at = 0.0

    @property
    def slowed(self) -> bool:
        return self.delay > 0 or self.allowed < self.base

    def throttled(self, now: float, started: float | None = None) -> bool:
        """A throttling reply at ``now`` to a message (or connection) begun at
        ``started``; True when it slowed us down. A reply to something begun before the
        last slowdown does not count again: it was sent at the old pace (as TCP halves
        its window once per round trip, not once per lost packet)."""
        self.successes = 0
        if (now if started is None else started) < self._last_throttle:
            return False
        self._last_throttle = self._last_step = now
        self.throttles += 1
        self.allowed = max(1, self.allowed // 2)
        self.delay = min(self.max_delay, max(self.first_delay, self.delay * 2))
        self._next_at = max(self._next_at, now + self.delay)
        return True

    def succeeded(self, now: float | None = None) -> bool:
        """A delivery went through at ``now``; True when that took a step back to full
        speed: after ``recover`` deliveries in a row, or ``recover_seconds`` of them (at a
        long pause twenty deliveries would take minutes)."""
        if not self.slowed:
            return False
        self.successes += 1
        timely = now is not None and now - self._last_step >= self.recover_seconds
        if self.successes < self.recover and not timely:
            return False
        self.successes = 0
        if now is not None:
            self._last_step = now
        self.delay = self.delay / 2 if self.delay / 2 >= self.first_delay else 0.0
        self.allowed = min(self.base, self.allowed + 1)
        return True

    def reserve(self, now: float) -> float:
        """Take the next sending slot: seconds to wait before starting a message."""
        if self.delay <= 0 and self._next_at <= now:
            return 0.0
        slot = max(now, self._next_at)
        self._next_at = slot + self.delay
        return slot - now


class Gate:
    """Connection counts by key (a stream's per-destination and total counts); a lane
    waits until each of its keys is under its limit. Limits may change while lanes wait
    (a shaper recovering): ``poke()`` makes them look again."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.active: Counter[str] = Counter()

    async def acquire(self, keys: Sequence[tuple[str, Callable[[], int]]]) -> None:
        async with self._cond:
            await self._cond.wait_for(
                lambda: all(self.active[k] < limit() for k, limit in keys))
            for k, _ in keys:
                self.active[k] += 1

    async def release(self, keys: Sequence[str]) -> None:
        async with self._cond:
            for k in keys:
                self.active[k] -= 1
                if self.active[k] <= 0:
                    del self.active[k]
            self._cond.notify_all()

    def over(self, key: str, limit: int) -> bool:
        return self.active[key] > limit

    async def poke(self) -> None:
        async with self._cond:
            self._cond.notify_all()
