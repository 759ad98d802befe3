"""DNS block- and allowlists (RFC 5782): query names, postscreen-style site syntax with
weights, and a cache that keeps each answer for its TTL (at most ``max_ttl``).

A site is ``zone``, ``zone*weight`` or ``zone=127.0.0.[2..11]*weight`` (Postfix's
postscreen_dnsbl_sites): the pattern says which A answers count; each octet is a number,
``[a..b]`` or ``[a;b;c]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..dns import DNSError, Resolver

log = logging.getLogger("pochta.spam")

_SITE = re.compile(r"^([A-Za-z0-9.-]+)(?:=([0-9.\[\];]+))?(?:\*(-?[0-9.]+))?$")


@dataclass(frozen=True, slots=True)
class Site:
    zone: str
    pattern: tuple[frozenset[int] | None, ...] | None  # per octet; None: any
    weight: float

    def matches(self, answer: str) -> bool:
        """RFC 5782 §2.1: answers are in 127.0.0.0/8; anything else (a wildcard or an
        error page of a resolver) never counts."""
        parts = answer.split(".")
        if len(parts) != 4 or parts[0] != "127":
            return False
        if self.pattern is None:
            return True
        for octet, allowed in zip(parts, self.pattern, strict=True):
            if allowed is not None and int(octet) not in allowed:
                return False
        return True


def _octet(text: str) -> frozenset[int]:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if ".." in inner:
            lo, hi = inner.split("..", 1)
            return frozenset(range(int(lo), int(hi) + 1))
        return frozenset(int(x) for x in inner.split(";"))
    return frozenset({int(text)})


def parse_site(text: str) -> Site:
    m = _SITE.match(text.strip())
    if m is None:
        raise ValueError(f"bad DNS list site {text!r}")
    zone, pattern, weight = m.groups()
    octets: tuple[frozenset[int] | None, ...] | None = None
    if pattern:
        parts = re.findall(r"\[[^\]]*\]|[0-9]+", pattern)
        if len(parts) != 4:
            raise ValueError(f"bad answer pattern in {text!r}")
        octets = tuple(_octet(p) for p in parts)
    return Site(zone.lower().rstrip("."), octets, float(weight) if weight else 1.0)


def query_name(ip: str, zone: str) -> str:
    """RFC 5782 §2.1 (IPv4: octets reversed) and §2.4 (IPv6: nibbles reversed)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        labels = ".".join(reversed(str(addr).split(".")))
    else:
        labels = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{labels}.{zone}"


class DNSListCache:
    """A lookups cache in front of the resolver: ``A`` answers of list zones, kept for the
    record's TTL when the resolver tells it (``a_with_ttl``), else for ``max_ttl``."""

    def __init__(self, resolver: Resolver, max_ttl: float,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000
                 ) -> None:
        self.resolver = resolver
        self.max_ttl = max_ttl
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self.lookups = 0  # DNS queries actually sent (for tests and stats)

    async def a(self, name: str) -> list[str]:
        now = self.clock()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.lookups += 1
        ttl = self.max_ttl
        with_ttl = getattr(self.resolver, "a_with_ttl", None)
        if with_ttl is not None:
            answers, record_ttl = await with_ttl(name)
            ttl = min(ttl, float(record_ttl))
        else:
            answers = await self.resolver.a(name)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # crude but bounded; a busy server refills it in seconds
        self._cache[name] = (now + ttl, list(answers))
        return list(answers)


@dataclass(frozen=True, slots=True)
class ListHit:
    zone: str
    weight: float
    answer: str


async def lookup(ip: str, sites: Sequence[Site], cache: DNSListCache) -> list[ListHit]:
    """Query every site at once; a site that cannot be asked (SERVFAIL, timeout) is logged
    and counts as no hit (postscreen does the same)."""

    async def one(site: Site) -> ListHit | None:
        try:
            answers = await cache.a(query_name(ip, site.zone))
        except (DNSError, ValueError) as exc:
            log.warning("dnsbl %s for %s: %s", site.zone, ip, exc)
            return None
        for answer in answers:
            if site.matches(answer):
                return ListHit(site.zone, site.weight, answer)
        return None

    results = await asyncio.gather(*(one(s) for s in sites))
    return [r for r in results if r is not None]
