"""DNS behind one small interface, so that tests use a static table and never the network.

``Resolver`` is what every caller (outbound MX routing, SPF, DKIM, DMARC, diagnostics) uses.
``DNSPythonResolver`` is the real one (dnspython); ``StaticResolver`` answers from a dict.
A lookup that finds no record returns an empty list (NXDOMAIN or NODATA); a lookup that
could not be answered (timeout, SERVFAIL) raises ``TemporaryDNSError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename


class DNSError(Exception):
    pass


class TemporaryDNSError(DNSError):
    """SERVFAIL, timeout, no nameserver: try again later (4xx, SPF temperror)."""


class NXDomain(DNSError):
    """The name does not exist (raised only by ``exists``-aware callers; lookups return [])."""


@dataclass(frozen=True, slots=True, order=True)
class MX:
    preference: int
    host: str  # without the trailing dot; "" for a null MX (RFC 7505: "0 .")


class Resolver(Protocol):
    async def mx(self, name: str) -> list[MX]: ...
    async def a(self, name: str) -> list[str]: ...
    async def aaaa(self, name: str) -> list[str]: ...
    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined into one string (RFC 7208 §3.3)."""

    async def ptr(self, address: str) -> list[str]: ...
    async def tlsa(self, name: str) -> list[str]: ...


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class StaticResolver:
    """Answers from tables; names are matched case-insensitively without the trailing dot.

    ``fail`` holds names whose every lookup raises ``TemporaryDNSError`` (for SERVFAIL tests).
    """

    mx_records: dict[str, list[MX]] = field(default_factory=dict)
    a_records: dict[str, list[str]] = field(default_factory=dict)
    aaaa_records: dict[str, list[str]] = field(default_factory=dict)
    txt_records: dict[str, list[str]] = field(default_factory=dict)
    ptr_records: dict[str, list[str]] = field(default_factory=dict)
    tlsa_records: dict[str, list[str]] = field(default_factory=dict)
    srv_records: dict[str, list[str]] = field(default_factory=dict)  # "0 1 993 host."
    cname_records: dict[str, list[str]] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    def _get(self, kind: str, table: Mapping[str, Sequence[object]], name: str) -> list[object]:
        key = _norm(name)
        self.queries.append((kind, key))
        if key in self.fail:
            raise TemporaryDNSError(f"{kind} {key}: SERVFAIL (static table)")
        return list(table.get(key, []))

    async def mx(self, name: str) -> list[MX]:
        return [r for r in self._get("MX", self.mx_records, name) if isinstance(r, MX)]

    async def a(self, name: str) -> list[str]:
        return [str(r) for r in self._get("A", self.a_records, name)]

    async def aaaa(self, name: str) -> list[str]:
        return [str(r) for r in self._get("AAAA", self.aaaa_records, name)]

    async def txt(self, name: str) -> list[str]:
        return [str(r) for r in self._get("TXT", self.txt_records, name)]

    async def ptr(self, address: str) -> list[str]:
        return [str(r) for r in self._get("PTR", self.ptr_records, address)]

    async def tlsa(self, name: str) -> list[str]:
        return [str(r) for r in self._get("TLSA", self.tlsa_records, name)]

    async def srv(self, name: str) -> list[str]:
        return [str(r) for r in self._get("SRV", self.srv_records, name)]

    async def cname(self, name: str) -> list[str]:
        return [str(r) for r in self._get("CNAME", self.cname_records, name)]


class DNSPythonResolver:
    """The real resolver (dnspython's asyncio resolver, system nameservers or given ones)."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 10.0) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        self._resolver.lifetime = timeout

    async def _query(self, name: str, rdtype: str) -> list[object]:
        try:
            answer = await self._resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise TemporaryDNSError(f"{rdtype} {name}: {exc}") from exc
        return list(answer)

    async def mx(self, name: str) -> list[MX]:
        out = []
        for r in await self._query(name, "MX"):
            out.append(MX(int(r.preference), str(r.exchange).rstrip(".")))  # type: ignore[attr-defined]
        return sorted(out)

    async def a(self, name: str) -> list[str]:
        return [str(r) for r in await self._query(name, "A")]

    async def a_with_ttl(self, name: str) -> tuple[list[str], int]:
        """A records and their TTL (DNS list caches keep answers that long); a name that
        does not exist is cached for its zone's negative TTL (RFC 2308) as known here."""

        try:
            answer = await self._resolver.resolve(name, "A")
        except dns.resolver.NXDOMAIN:
            return [], 300
        except dns.resolver.NoAnswer:
            return [], 300
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise TemporaryDNSError(f"A {name}: {exc}") from exc
        ttl = answer.rrset.ttl if answer.rrset is not None else 300
        return [str(r) for r in answer], int(ttl)

    async def aaaa(self, name: str) -> list[str]:
        return [str(r) for r in await self._query(name, "AAAA")]

    async def txt(self, name: str) -> list[str]:
        out = []
        for r in await self._query(name, "TXT"):
            strings = r.strings  # type: ignore[attr-defined]
            out.append(b"".join(strings).decode("utf-8", "replace"))
        return out

    async def ptr(self, address: str) -> list[str]:
        name = dns.reversename.from_address(address).to_text()
        return [str(r).rstrip(".") for r in await self._query(name, "PTR")]

    async def tlsa(self, name: str) -> list[str]:
        return [str(r) for r in await self._query(name, "TLSA")]

    async def srv(self, name: str) -> list[str]:
        """SRV records as presentation text ("0 1 993 mail.example.org.")."""
        return [str(r) for r in await self._query(name, "SRV")]

    async def cname(self, name: str) -> list[str]:
        return [str(r) for r in await self._query(name, "CNAME")]
