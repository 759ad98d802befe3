"""Greylisting (after postgrey): the first attempt of an unknown (client network, sender,
recipient) triplet gets ``451 4.7.1``; a retry after ``delay`` and within ``retry_window``
passes; a client network that passed ``auto_allowlist`` triplets is no longer delayed.
State is in the store (``SpamStore``), shared by every process and node. The clock is
injected for tests.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from ..mail.addresses import normalize_login
from ..proto.smtp.replies import Reply
from ..storage.interfaces_spam import SpamStore
from .settings import GreylistConfig


def client_network(ip: str, config: GreylistConfig) -> str:
    """The client's /24 (IPv4) or /64 (IPv6): senders retry from another host of a pool."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = config.ipv4_prefix if addr.version == 4 else config.ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def triplet(network: str, sender: str, recipient: str) -> str:
    return f"{network}/{normalize_login(sender)}/{normalize_login(recipient)}"


class Greylist:
    def __init__(self, config: GreylistConfig, store: SpamStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self._last_purge = 0.0

    async def check(self, ip: str, sender: str, recipient: str) -> Reply | None:
        """None to accept the recipient, else the 451 to answer."""
        cfg = self.config
        now = self.clock()
        if now - self._last_purge >= 3600:  # forget old triplets, at most once an hour
            self._last_purge = now
            await self.purge()
        network = client_network(ip, cfg)
        if cfg.auto_allowlist > 0 and await self.store.greylist_client_passes(
                network, now - cfg.max_age) >= cfg.auto_allowlist:
            return None
        key = triplet(network, sender, recipient)
        entry = await self.store.greylist_touch(key, now, now - cfg.retry_window)
        if entry.passed:
            return None
        waited = now - entry.first_seen
        if waited >= cfg.delay:
            await self.store.greylist_pass(key, network, now)
            return None
        # postgrey's reply: a hint of how long to wait (RFC 3463 4.7.1: delivery not
        # authorized for now, retry)
        left = int(cfg.delay - waited) + 1
        return Reply(451, "4.7.1", f"Greylisted, please try again in {left} seconds")

    async def purge(self) -> int:
        return await self.store.greylist_purge(self.clock() - self.config.max_age)
