"""Connection screening on the mta role, after Postfix's postscreen: DNS allow- and
blocklists with weights, pregreet detection, HELO checks, forward-confirmed reverse DNS
and per-IP rate limits. Sans-IO where it can be: the checks take a resolver and a
``CoordinationStore`` (counters shared by every process and node) and return findings; the
SMTP driver (through ``spam.gate``) turns them into replies and headers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..dns import DNSError, Resolver
from ..proto.smtp.replies import Reply
from ..storage.interfaces import CoordinationStore
from .dnsbl import DNSListCache, ListHit, Site, lookup, parse_site
from .settings import ScreeningConfig

log = logging.getLogger("pochta.spam")

# RFC 5321 §4.1.1.1 / §4.1.3: a domain name or an address literal.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+\.?$")


@dataclass
class ScreenResult:
    """What screening found about one connection (kept for the session's messages)."""

    allowlisted: list[ListHit] = field(default_factory=list)
    blocklisted: list[ListHit] = field(default_factory=list)
    fcrdns: str = ""  # RFC 8601 iprev: pass, fail, temperror ("" when not checked)
    ptr_name: str = ""
    helo: list[str] = field(default_factory=list)  # failed HELO checks
    score: float = 0.0

    @property
    def dnsbl_score(self) -> float:
        return sum(h.weight for h in self.blocklisted)

    def summary(self) -> str:
        """For logs and the X-Spam-Screening header."""
        parts = [f"score={self.score:g}"]
        if self.allowlisted:
            parts.append("dnswl=" + ",".join(h.zone for h in self.allowlisted))
        if self.blocklisted:
            parts.append("dnsbl=" + ",".join(f"{h.zone}({h.weight:g})"
                                              for h in self.blocklisted))
        if self.fcrdns:
            parts.append(f"fcrdns={self.fcrdns}")
        if self.helo:
            parts.append("helo=" + ",".join(self.helo))
        return "; ".join(parts)


def ip_literal(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"[{ip}]" if addr.version == 4 else f"[IPv6:{ip}]"


def helo_findings(helo: str, hostname: str, own_addresses: Sequence[str]) -> list[str]:
    """Checks that need no DNS: syntax (RFC 5321 §4.1.1.1), and a client that claims to be
    us (our host name, or one of our addresses as a literal)."""
    name = helo.strip()
    out: list[str] = []
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            addr = ipaddress.ip_address(literal)
        except ValueError:
            return ["bad-syntax"]
        if str(addr) in own_addresses:
            out.append("our-address")
        return out
    if not _DOMAIN.match(name):
        out.append("bad-syntax")
        return out
    if name.rstrip(".").lower() == hostname.lower():
        out.append("our-name")
    return out


class Screener:
    def __init__(self, config: ScreeningConfig, resolver: Resolver, store: CoordinationStore,
                 hostname: str) -> None:
        self.config = config
        self.resolver = resolver
        self.store = store
        self.hostname = hostname
        self.blocklists: list[Site] = [parse_site(s) for s in config.dnsbl_sites]
        self.allowlists: list[Site] = [parse_site(s) for s in config.dnswl_sites]
        self.cache = DNSListCache(resolver, config.dnsbl_cache_ttl)
        # ip -> (expiry, iprev result, name): a client's rDNS is asked once per TTL
        self._iprev: dict[str, tuple[float, str, str]] = {}

    # --- at connect ----------------------------------------------------------------------

    async def connection_rate(self, ip: str) -> Reply | None:
        """smtpd_client_connection_rate_limit, counted in the store (every node)."""
        limit = self.config.connection_rate_limit
        if limit <= 0:
            return None
        count = await self.store.add_to_counter(f"screen:conn:{ip}", 1,
                                                self.config.rate_window)
        if count > limit:
            return Reply(421, "4.7.0", f"Error: too many connections from {ip}", close=True)
        return None

    async def lists(self, ip: str, result: ScreenResult) -> Reply | None:
        """Allowlists first (a hit skips the rest), then blocklists; a refusal when the
        summed weight reaches the threshold (postscreen_dnsbl_threshold)."""
        if self.allowlists:
            result.allowlisted = await lookup(ip, self.allowlists, self.cache)
            if result.allowlisted:
                return None
        if self.blocklists:
            result.blocklisted = await lookup(ip, self.blocklists, self.cache)
            result.score += result.dnsbl_score
            if (self.config.dnsbl_action == "reject" and result.blocklisted
                    and result.dnsbl_score >= self.config.dnsbl_threshold):
                zones = ", ".join(h.zone for h in result.blocklisted)
                return Reply(554, "5.7.1", f"Service unavailable; client [{ip}] blocked "
                             f"using {zones}", close=True)
        return None

    async def fcrdns(self, ip: str, result: ScreenResult) -> None:
        """iprev (RFC 8601 §2.7.3): a PTR name whose A/AAAA records include the client."""
        if not self.config.fcrdns:
            return
        now = time.monotonic()
        cached = self._iprev.get(ip)
        if cached is not None and cached[0] > now:
            result.fcrdns, result.ptr_name = cached[1], cached[2]
        else:
            await self._ask_iprev(ip, result)
            if result.fcrdns != "temperror":
                if len(self._iprev) >= 100_000:
                    self._iprev.clear()
                self._iprev[ip] = (now + self.config.dnsbl_cache_ttl, result.fcrdns,
                                   result.ptr_name)
        if result.fcrdns == "fail":
            result.score += self.config.fcrdns_weight

    async def _ask_iprev(self, ip: str, result: ScreenResult) -> None:
        try:
            names = await self.resolver.ptr(ip)
            result.fcrdns = "fail"
            for name in names[:10]:  # RFC 7208 §4.6.4 caps PTR names at 10 as well
                addr = ipaddress.ip_address(ip)
                try:
                    found = await (self.resolver.a(name) if addr.version == 4
                                   else self.resolver.aaaa(name))
                except DNSError:
                    continue
                if any(ipaddress.ip_address(f) == addr for f in found if _is_ip(f)):
                    result.fcrdns, result.ptr_name = "pass", name
                    break
        except DNSError:
            result.fcrdns = "temperror"

    async def greeted(self, ip: str) -> bool:
        """True when the client passed the pregreet test within pregreet_ttl."""
        return await self.store.counter_value(f"screen:greet:{ip}",
                                              self.config.pregreet_ttl) > 0

    async def remember_greeted(self, ip: str) -> None:
        await self.store.add_to_counter(f"screen:greet:{ip}", 1, self.config.pregreet_ttl)

    # --- later in the session -------------------------------------------------------------

    async def helo(self, helo: str, own_addresses: Sequence[str], result: ScreenResult
                   ) -> None:
        if not self.config.helo_checks or result.helo:
            return
        found = helo_findings(helo, self.hostname, own_addresses)
        if not found and self.config.helo_resolve and not helo.startswith("["):
            try:
                a, aaaa = await asyncio.gather(self.resolver.a(helo), self.resolver.aaaa(helo))
                if not a and not aaaa:
                    found.append("unresolvable")
            except DNSError:
                pass  # a temporary failure proves nothing
        result.helo = found or ["ok"]
        result.score += self.config.helo_weight * len(found)

    async def message_rate(self, ip: str) -> Reply | None:
        """smtpd_client_message_rate_limit, counted in the store (every node)."""
        limit = self.config.message_rate_limit
        if limit <= 0:
            return None
        count = await self.store.add_to_counter(f"screen:msg:{ip}", 1, self.config.rate_window)
        if count > limit:
            return Reply(450, "4.7.1", f"Error: too many messages from {ip}, try later")
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
