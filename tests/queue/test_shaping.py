"""The shaping core (queue/shaping.py), sans-IO with a fake clock: which replies mean
"slow down", the backoff (half the connections, twice the pause, once per pause), the
recovery step by step back to the configured limits, the pacing of message starts, and
the connection gate."""

from __future__ import annotations

import asyncio

from pochta.proto.smtp.client import ServerReply
from pochta.queue.shaping import Gate, Shaper, is_throttle


def test_throttling_replies() -> None:
    assert is_throttle(ServerReply(421, ("4.7.28 Our system has detected an unusual rate",)))
    assert is_throttle(ServerReply(421, ("Service not available",)))
    assert is_throttle(ServerReply(451, ("4.7.500 Server busy. Please try again later",)))
    assert is_throttle(ServerReply(450, ("4.7.1 Too many messages from your IP",)))
    assert is_throttle(ServerReply(421, ("4.7.0 [TSS04] Messages temporarily deferred",)))
    assert not is_throttle(ServerReply(451, ("4.3.0 Temporary storage failure",)))
    assert not is_throttle(ServerReply(450, ("4.2.1 Mailbox busy",)))
    assert not is_throttle(ServerReply(550, ("5.7.1 Too many recipients: rate limit",)))  # 5xx
    assert not is_throttle(ServerReply(250, ("2.0.0 Ok",)))


def test_backoff_and_recovery() -> None:
    s = Shaper(4, first_delay=0.05, max_delay=1.0, recover=3)
    assert not s.slowed and s.reserve(0.0) == 0.0
    assert s.throttled(10.0, started=9.9)
    assert (s.allowed, s.delay) == (2, 0.05)
    # replies to messages sent before we slowed down count once, however late they come
    assert not s.throttled(10.01, started=9.95)
    assert not s.throttled(12.0, started=9.99)
    assert (s.allowed, s.delay) == (2, 0.05)
    assert s.throttled(12.2, started=10.1)  # sent at the slower pace: slow down more
    assert (s.allowed, s.delay) == (1, 0.1)
    for t in (13.0, 14.0, 15.0, 16.0, 17.0):
        s.throttled(t)
    assert (s.allowed, s.delay) == (1, 1.0)  # capped at max_delay, never 0 connections
    assert s.throttles == 7
    # recovery: every `recover` deliveries in a row take one step back
    steps = []
    for _ in range(30):
        if s.succeeded():
            steps.append((s.allowed, s.delay))
    assert steps[:3] == [(2, 0.5), (3, 0.25), (4, 0.125)]
    assert steps[-1] == (4, 0.0) and not s.slowed
    assert not s.succeeded()  # at full speed nothing changes


def test_recovery_by_time_at_long_pauses() -> None:
    s = Shaper(4, first_delay=0.5, max_delay=8.0, recover=20, recover_seconds=1.0)
    for t, started in ((0.0, 0.0), (1.0, 0.6), (2.0, 1.6), (4.0, 2.5), (8.0, 4.5)):
        s.throttled(t, started)
    assert (s.allowed, s.delay) == (1, 8.0)
    # a delivery every 8 s (the pause): each one is a step, not one step per twenty
    assert not s.succeeded(8.5)  # within a second of the slowdown
    now, delays = 16.0, []
    while s.slowed:
        assert s.succeeded(now)
        delays.append(s.delay)
        now += max(s.delay, 0.01) + 1.0
    assert delays == [4.0, 2.0, 1.0, 0.5, 0.0]
    assert s.allowed == 4


def test_a_throttle_resets_the_recovery_count() -> None:
    s = Shaper(2, first_delay=0.1, max_delay=1.0, recover=3)
    s.throttled(0.0)
    s.succeeded()
    s.succeeded()
    s.throttled(5.0, started=4.9)  # sent after the first: counts, the count starts again
    assert (s.allowed, s.delay) == (1, 0.2)
    assert not s.succeeded() and not s.succeeded()
    assert s.succeeded()


def test_reserve_spaces_message_starts() -> None:
    s = Shaper(4, first_delay=0.5, max_delay=2.0)
    s.throttled(100.0)
    # three lanes ask at once: each gets its own slot, 0.5 s apart
    waits = [s.reserve(100.0) for _ in range(3)]
    assert waits == [0.5, 1.0, 1.5]
    assert s.reserve(103.0) == 0.0  # later than every reserved slot: at once


async def test_gate_limits_follow_a_changing_limit() -> None:
    gate = Gate()
    limit = [1]
    keys = [("bulk\0dest", lambda: limit[0])]
    await gate.acquire(keys)
    second = asyncio.create_task(gate.acquire(keys))
    await asyncio.sleep(0.01)
    assert not second.done()  # over the limit: waits
    limit[0] = 2
    await gate.poke()  # a shaper recovered
    await asyncio.wait_for(second, 1)
    assert gate.active["bulk\0dest"] == 2
    assert gate.over("bulk\0dest", 1)
    await gate.release(["bulk\0dest", "bulk\0dest"])
    assert not gate.active
