"""Locks that hold across processes and nodes (the store's ``try_lock``), kept alive while
their holder works and given back when it is done. A holder that dies (kill -9, a node
that fails) loses its lock when the lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from ..storage.interfaces import MailStore, StoreError

log = logging.getLogger("pochta.locks")

# This process's part of every owner id: host, pid and a random tag.
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class HeldLock:
    """A lock this process holds; renewed every third of its lease until released."""

    def __init__(self, store: MailStore, name: str, owner: str, lease: float) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.lease = lease
        self._renewal = asyncio.get_running_loop().create_task(self._renew())

    @classmethod
    async def acquire(cls, store: MailStore, name: str, lease: float = 60.0,
                      session: str = "") -> HeldLock | None:
        """The lock, or None while someone else holds it."""
        owner = f"{PROCESS_ID}:{session or secrets.token_hex(4)}"
        if not await store.try_lock(name, owner, lease):
            return None
        return cls(store, name, owner, lease)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await self.store.try_lock(self.name, self.owner, self.lease):
                    log.error("lost the lock %s (lease ran out while held)", self.name)
                    return
            except StoreError as exc:
                log.warning("could not renew the lock %s: %s", self.name, exc)

    async def release(self) -> None:
        self._renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewal
        with contextlib.suppress(StoreError):
            await self.store.unlock(self.name, self.owner)
