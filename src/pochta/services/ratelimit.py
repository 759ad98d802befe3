"""Hourly sending limits that hold across processes and nodes.

One process counts in memory (``HourlyLimiter``: no store round trip per message). When
several processes serve the same store (``pochta serve --workers N``, or several nodes on
PostgreSQL) the counts live in the store's windowed counters, so a user cannot send N
times the limit by spreading connections over the workers.
"""

from __future__ import annotations

from ..storage.interfaces import MailStore
from .submission import HourlyLimiter

WINDOW = 3600.0


class HourlyCounter:
    def __init__(self, name: str, store: MailStore | None = None) -> None:
        """``store`` given: shared counts (keys ``rate:<name>:<key>``); else in memory."""
        self.name = name
        self.store = store
        self.local = HourlyLimiter()

    def _key(self, key: str) -> str:
        return f"rate:{self.name}:{key}"

    async def used(self, key: str) -> int:
        if self.store is None:
            return self.local.used(key)
        return await self.store.counter_value(self._key(key), WINDOW)

    async def would_exceed(self, key: str, amount: int, limit: int) -> bool:
        return await self.used(key) + amount > limit

    async def add(self, key: str, amount: int = 1) -> None:
        if self.store is None:
            self.local.add(key, amount)
        else:
            await self.store.add_to_counter(self._key(key), amount, WINDOW)
