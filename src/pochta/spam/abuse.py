"""Compromised-account defence on submission: per-account volume and bounces counted in the
store (``CoordinationStore`` counters, so every process and node adds to the same count),
and a hold when they look like a spam run.

The documented choice (docs/spam.md): a held account's submissions get ``451 4.7.1`` at
MAIL FROM, and (``[abuse] hold_queue``) its mail already queued is held too (rescheduled
far ahead, not counted as an attempt); ``pochta user release USER`` lifts both. The
postmaster is told by a message in their mailbox.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from ..proto.smtp.replies import Reply
from ..storage.interfaces import MailStore, QueueState
from .settings import AbuseConfig

log = logging.getLogger("pochta.spam")

# Held queue items are made due this far ahead (far beyond any queue lifetime).
HOLD_AHEAD = 10 * 365 * 86400.0

Notifier = Callable[[str, str], Awaitable[None]]


class AbuseGuard:
    def __init__(self, config: AbuseConfig, store: MailStore,
                 notify: Notifier | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.config = config
        self.store = store
        self.notify = notify
        self.clock = clock

    async def check(self, address: str) -> Reply | None:
        """At MAIL FROM of an authenticated session: the refusal of a held account."""
        if not self.config.enabled:
            return None
        if await self.store.account_hold(address) is None:
            return None
        return Reply(451, "4.7.1", "Account held for unusual sending; contact the postmaster")

    async def submitted(self, address: str, recipients: int) -> None:
        """After a submission was accepted."""
        if not self.config.enabled:
            return
        cfg = self.config
        messages = await self.store.add_to_counter(f"abuse:msg:{address}", 1, cfg.window)
        rcpts = await self.store.add_to_counter(f"abuse:rcpt:{address}", recipients,
                                                cfg.window)
        if messages > cfg.max_messages:
            await self.hold(address, f"{messages} messages in {cfg.window:g} s")
        elif rcpts > cfg.max_recipients:
            await self.hold(address, f"{rcpts} recipients in {cfg.window:g} s")

    async def bounced(self, address: str, recipients: int) -> None:
        """A DSN reports ``recipients`` failed recipients of mail the account sent."""
        if not self.config.enabled or recipients <= 0:
            return
        cfg = self.config
        bounces = await self.store.add_to_counter(f"abuse:bounce:{address}", recipients,
                                                  cfg.window)
        sent = await self.store.counter_value(f"abuse:rcpt:{address}", cfg.window)
        if bounces >= cfg.max_bounces and bounces >= cfg.max_bounce_ratio * max(sent, 1):
            await self.hold(address, f"{bounces} bounced of {sent} recipients in "
                                     f"{cfg.window:g} s")

    async def hold(self, address: str, reason: str) -> bool:
        now = self.clock()
        if not await self.store.hold_account(address, reason, now):
            return False
        held = 0
        if self.config.hold_queue:
            ids = [i.id for i in await self.store.list_queue()
                   if i.envelope.authenticated_as == address
                   and i.state in (QueueState.PENDING, QueueState.DEFERRED)]
            if ids:
                held = await self.store.reschedule_queue_items(ids, now + HOLD_AHEAD)
        log.warning("account held user=%s reason=%r queued_held=%d (release: pochta user "
                    "release %s)", address, reason, held, address)
        if self.notify is not None:
            try:
                await self.notify(address, reason)
            except Exception:
                log.exception("could not tell the postmaster about the hold of %s", address)
        return True

    async def release(self, address: str) -> tuple[bool, int]:
        """Lift the hold; returns (was held, queued items released)."""
        was = await self.store.release_account(address)
        now = self.clock()
        ids = [i.id for i in await self.store.list_queue()
               if i.envelope.authenticated_as == address
               and i.state in (QueueState.PENDING, QueueState.DEFERRED)
               and i.next_attempt > now + HOLD_AHEAD / 2]
        released = await self.store.reschedule_queue_items(ids, now) if ids else 0
        for kind in ("msg", "rcpt", "bounce"):
            await self.store.reset_counter(f"abuse:{kind}:{address}")
        if was:
            log.info("account released user=%s queued_released=%d", address, released)
        return was, released


def failed_recipients(dsn: bytes) -> int:
    """How many recipients an RFC 3464 report says failed (``Action: failed``)."""
    return sum(1 for line in dsn.splitlines() if line.strip().lower() == b"action: failed")
