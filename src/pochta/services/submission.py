"""Submission policy (RFC 6409): sender ownership, the From check, message fixes, DKIM
signing and per-account hourly rate limits. ``SubmissionPolicy`` is what the SMTP driver
asks at MAIL, RCPT and after DATA; a refusal is raised as an error of the hierarchy
(pochta/errors.py: ``SenderNotOwned``, ``FromNotOwned``, ``MessageRateLimited``,
``RecipientRateLimited``) that carries its SMTP reply."""

from __future__ import annotations

import email.utils
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..addresses import AddressError, base_address, normalize_address, split_address
from ..errors import FromNotOwned, MessageRateLimited, RecipientRateLimited, SenderNotOwned
from ..maildate import mail_date
from ..storage.interfaces import Account

log = logging.getLogger("pochta.submission")

HEADER_END = b"\r\n\r\n"


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, the rest starting at the empty line)."""
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(HEADER_END)
    if end < 0:
        return data if data.endswith(b"\r\n") else data + b"\r\n", b""
    return data[: end + 2], data[end + 2:]


def header_values(header_block: bytes, name: str) -> list[str]:
    """Unfolded values of every header field called ``name`` (case-insensitive)."""
    text = header_block.decode("utf-8", "surrogateescape")
    values: list[str] = []
    current: list[str] | None = None
    wanted = name.lower() + ":"
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and current is not None:
            current.append(line)
            continue
        if current is not None:
            values.append(" ".join(part.strip() for part in current))
            current = None
        if line.lower().startswith(wanted):
            current = [line[len(wanted):]]
    if current is not None:
        values.append(" ".join(part.strip() for part in current))
    return values


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
    headers, _ = split_message(data)
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


class RateCounter(Protocol):
    """An hourly counter per account (services/ratelimit.py ``HourlyCounter``)."""

    async def would_exceed(self, key: str, amount: int, limit: int) -> bool: ...

    async def add(self, key: str, amount: int = 1) -> None: ...


class LocalDomains(Protocol):
    async def is_local_domain(self, domain: str) -> bool: ...


class Signer(Protocol):
    async def sign(self, message: bytes, domain: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    messages_per_hour: int
    recipients_per_hour: int


@dataclass(frozen=True, slots=True)
class SubmissionPolicy:
    """The rules for mail an authenticated user submits, whatever the protocol."""

    hostname: str
    limits: SubmissionLimits
    domains: LocalDomains
    message_rate: RateCounter
    recipient_rate: RateCounter
    signer: Signer | None  # None: DKIM signing is off ([dkim] sign)

    async def check_sender(self, account: Account, owned: set[str], address: str) -> None:
        """MAIL FROM: the user must own the envelope sender (RFC 6409 §6.1) and be under
        the hourly message limit."""
        if not account.may_send_as_anyone and not owns(owned, address):
            log.info("sender rejected from=%r user=%s", address, account.address)
            raise SenderNotOwned(address, account.address)
        limit = self.limits.messages_per_hour
        if await self.message_rate.would_exceed(account.address, 1, limit):
            raise MessageRateLimited(limit)

    async def check_recipient(self, account: Account, recipients_so_far: int) -> None:
        """RCPT TO: one more recipient stays under the hourly recipient limit."""
        limit = self.limits.recipients_per_hour
        if await self.recipient_rate.would_exceed(account.address, recipients_so_far + 1,
                                                  limit):
            raise RecipientRateLimited(limit)

    def check_from(self, account: Account, owned: set[str], head: bytes) -> None:
        """After DATA: every From: header address must be the user's too (RFC 6409
        §8.1 lets the server refuse what it would otherwise have to rewrite)."""
        if account.may_send_as_anyone:
            return
        for addr in from_addresses(split_message(head)[0]):
            if not owns(owned, addr):
                log.info("header From rejected from=%r user=%s", addr, account.address)
                raise FromNotOwned(addr, account.address)

    async def prepare(self, head: bytes, whole: Callable[[bytes], Awaitable[bytes]],
                      now: float) -> bytes:
        """The header block with Date/Message-ID added (RFC 6409 §8.3, §8.4) and the
        DKIM-Signature in front. ``whole`` reads the whole message for a given header
        block (a big one lives in a spool file), since the signature covers the body."""
        head = add_missing_headers(head, self.hostname, now)
        return await self._sign(head, whole)

    async def _sign(self, head: bytes, whole: Callable[[bytes], Awaitable[bytes]]) -> bytes:
        if self.signer is None:
            return head
        senders = from_addresses(split_message(head)[0])
        if not senders:
            return head
        try:
            domain = split_address(senders[0])[1]
        except AddressError:
            return head
        if not await self.domains.is_local_domain(domain):
            return head
        data = await whole(head)
        signed = await self.signer.sign(data, domain)
        return signed[: len(signed) - len(data)] + head

    async def record(self, account: Account, recipients: int) -> None:
        """A submitted message was accepted: count it against the hourly limits."""
        await self.message_rate.add(account.address)
        await self.recipient_rate.add(account.address, recipients)
