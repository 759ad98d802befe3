"""The retry schedule: when to try a deferred recipient again, when to warn, when to give up.

The schedule is a pure function of the item's age, so it needs no per-item counter and
survives restarts: the next interval is ``age * (backoff - 1)`` clamped to
``[first_retry, max_retry_interval]``, which doubles the interval each time with the
default backoff of 2 (5 min, 5, 10, 20, 40 ... up to 4 h). An attempt is always placed
exactly at ``created + delay_warning`` (the delay DSN is sent when that attempt defers)
and at ``created + max_age`` (the last one; deferring then means giving up).
"""

from __future__ import annotations

from dataclasses import dataclass

from pochta.queue.settings import QueueConfig

_EPS = 1e-3


@dataclass(frozen=True, slots=True)
class RetryDecision:
    give_up: bool
    next_attempt: float
    warn: bool  # send a delay DSN now


def next_retry(cfg: QueueConfig, created: float, scheduled: float, now: float) -> RetryDecision:
    """A transient failure at ``now`` of an attempt that was due at ``scheduled``."""
    age = now - created
    expiry = created + cfg.max_age
    if now >= expiry - _EPS:
        return RetryDecision(True, now, False)
    delay = min(max(age * (cfg.backoff - 1.0), cfg.first_retry), cfg.max_retry_interval)
    nxt = now + delay
    warn = False
    if cfg.delay_warning > 0:
        warn_at = created + cfg.delay_warning
        if abs(scheduled - warn_at) < _EPS:
            warn = True
        elif now < warn_at < nxt:
            nxt = warn_at
    nxt = min(nxt, expiry)
    return RetryDecision(False, nxt, warn)
