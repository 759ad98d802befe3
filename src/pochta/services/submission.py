"""Submission policy (RFC 6409): sender ownership, message fixes, per-account rate limits."""

from __future__ import annotations

import email.utils
import secrets
import time
from collections import deque
from collections.abc import Callable

from ..mail.addresses import AddressError, base_address, normalize_address
from ..mail.headers import header_values, split_header
from ..maildate import mail_date


def from_addresses(header_block: bytes) -> list[str]:
    """Addresses in the From: header(s); [] when there is none."""
    values = header_values(header_block, "From")
    return [addr for _name, addr in email.utils.getaddresses(values) if addr]


def owns(owned: set[str], address: str) -> bool:
    """Whether ``address`` (or its base without +tag) is one of ``owned``."""
    try:
        norm = normalize_address(address)
    except AddressError:
        return False
    return norm in owned or base_address(norm) in owned


def add_missing_headers(data: bytes, hostname: str, now: float) -> bytes:
    """RFC 6409 §8.3 and §8.4: add Date: and Message-ID: when the client left them out."""
    headers, _ = split_header(data)
    if not headers.endswith(b"\n"):
        headers += b"\r\n"  # a header with no line end after it (no body either)
    extra = b""
    if not header_values(headers, "Date"):
        extra += b"Date: " + mail_date(now).encode() + b"\r\n"
    if not header_values(headers, "Message-ID"):
        token = f"{int(now)}.{secrets.token_hex(8)}"
        extra += f"Message-ID: <{token}@{hostname}>\r\n".encode()
    return data if not extra else headers + extra + data[len(headers):]


class HourlyLimiter:
    """Counts events per key over the last hour (a sliding window).

    Each key keeps its events and their running total, so a check costs O(expired
    events), not O(events in the hour): accounts with high limits stay cheap."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._events: dict[str, deque[tuple[float, int]]] = {}
        self._totals: dict[str, int] = {}

    def _expire(self, key: str) -> None:
        events = self._events.get(key)
        if not events:
            return
        horizon = self.clock() - 3600
        while events and events[0][0] < horizon:
            self._totals[key] -= events.popleft()[1]
        if not events:
            del self._events[key]
            del self._totals[key]

    def used(self, key: str) -> int:
        self._expire(key)
        return self._totals.get(key, 0)

    def would_exceed(self, key: str, amount: int, limit: int) -> bool:
        return self.used(key) + amount > limit

    def add(self, key: str, amount: int = 1) -> None:
        self._expire(key)
        self._events.setdefault(key, deque()).append((self.clock(), amount))
        self._totals[key] = self._totals.get(key, 0) + amount
