"""DKIM signing for submitted mail, with the domain's keys cached between messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from ..policy import dkim

KEY_CACHE_SECONDS = 60.0  # `pochta dkim activate` takes effect within a minute


class DKIMSigner:
    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self._keys: dict[str, tuple[float, list[dkim.DKIMKey]]] = {}

    async def keys_for(self, domain: str) -> list[dkim.DKIMKey]:
        cached = self._keys.get(domain)
        if cached is not None and self.clock() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        keys = await asyncio.to_thread(dkim.signing_keys, self.data_dir, domain)
        self._keys[domain] = (self.clock(), keys)
        return keys

    async def sign(self, message: bytes, domain: str) -> bytes:
        """The message with DKIM-Signature headers in front (unchanged if no keys)."""
        keys = await self.keys_for(domain)
        if not keys:
            return message
        return await dkim.sign(message, keys) + message
