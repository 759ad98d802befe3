"""Where the server may send webhook requests (server-side request forgery).

A key with the ``webhooks`` scope names a URL and the server POSTs to it: without a
check, that reaches what only the server can reach (127.0.0.1's admin ports, the cloud
metadata service at 169.254.169.254, the LAN). Only globally routable addresses are
allowed unless the admin lists a network in ``[sending] webhook_allow_networks``.

The check runs when a webhook is added and again before every request, on every address
the host name resolves to (through the server's resolver); the connection then goes to an
address that was checked (no second lookup a rebinding DNS server could answer
differently). Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..dns import DNSError, Resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefused(Exception):
    """The URL may not be requested; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str  # http | https
    host: str  # as in the URL (Host header, TLS server name)
    port: int
    path: str  # path and query
    address: str  # the checked address to connect to


def parse_networks(values: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def why_refused(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """None if the server may connect to ``address``, else the reason."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return why_refused(address.ipv4_mapped, allowed)
    if any(address in net for net in allowed):
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    if address.is_private or not address.is_global:
        return "a private or reserved address"
    return None


class UrlGuard:
    def __init__(self, resolver: Resolver, allow_networks: Sequence[str] = ()) -> None:
        self.resolver = resolver
        self.allowed = parse_networks(allow_networks)

    async def target(self, url: str) -> Target:
        """The URL's parts and one checked address; ``UrlRefused`` if any address the
        host has is refused (or it has none)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlRefused("only http:// and https:// URLs with a host")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("no user name or password in the URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UrlRefused("bad port") from None
        host = parts.hostname
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await self._resolve(host)
        for address in addresses:
            reason = why_refused(address, self.allowed)
            if reason is not None:
                raise UrlRefused(f"{host} has {address}, {reason} (an admin can allow it "
                                 "in [sending] webhook_allow_networks)")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(parts.scheme, host, port, path, str(addresses[0]))

    async def _resolve(self, host: str) -> list[IPAddress]:
        found: list[str] = []
        errors: list[str] = []
        for lookup in (self.resolver.a, self.resolver.aaaa):
            try:
                found += await lookup(host)
            except DNSError as exc:
                errors.append(str(exc))
        if not found:
            raise UrlRefused(f"{host} has no address" + (f" ({errors[0]})" if errors else ""))
        out: list[IPAddress] = []
        for a in found:
            try:
                out.append(ipaddress.ip_address(a))
            except ValueError:
                raise UrlRefused(f"{host}: bad address {a!r} in DNS") from None
        return out
