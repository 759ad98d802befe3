"""Where mail for a domain goes: a static route (transport map / smarthost) or the
domain's MX hosts (RFC 5321 §5.1), with the TLS policy to apply.

* MX records sorted by preference, equal preferences shuffled (RFC 5321 §5.1);
* no MX record: the domain itself is the implicit MX (its A/AAAA records);
* a null MX ("0 .", RFC 7505 §3) means the domain accepts no mail: fail at once (556 5.1.10);
* DNS trouble is a transient failure (4.4.3).

``TLSPolicyHook`` is where MTA-STS (RFC 8461) and DANE (RFC 7672) plug in
(``pochta.transport_security.policy``): it gets the domain and its MX host names and may
raise the TLS requirement, restrict the MX hosts and add per-host TLSA records.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key
from pochta.proto.smtp.client import ServerReply, local_reply
from pochta.queue.dane import HostTLSA, TLSARecord
from pochta.queue.settings import QueueConfig, Route, TLSPolicy


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: a pattern is a host name or "*." and a name; the wildcard stands for
    exactly one leftmost label."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True, slots=True)
class TLSRequirement:
    """How to treat TLS towards one destination.

    mode: none | opportunistic | starttls | implicit; verify: the certificate must be
    valid for the host name we connect to (or one of ``match_names`` when set, for
    MTA-STS/DANE-style policies)."""

    mode: str = "opportunistic"
    verify: bool = False
    match_names: tuple[str, ...] = ()
    # -- MTA-STS / DANE (pochta.transport_security); empty for a plain policy ----------
    policy: str = ""  # "sts" (enforce), "sts-testing", "dane"; for logs and TLS-RPT
    policy_domain: str = ""
    policy_lines: tuple[str, ...] = ()  # the MTA-STS policy (TLS-RPT policy-string)
    mx_patterns: tuple[str, ...] = ()  # MTA-STS enforce: only MX hosts matching these
    dane_hosts: tuple[tuple[str, HostTLSA], ...] = ()  # per MX host, DANE over the rest
    tlsa: tuple[TLSARecord, ...] = ()  # for_host(): the peer must match one of these
    refuse: str = ""  # for_host(): do not connect (e.g. a TLSA lookup failed)

    def for_host(self, host: str) -> TLSRequirement:
        """The requirement for one MX host: DANE takes precedence where it applies."""
        for name, tlsa in self.dane_hosts:
            if name == host:
                return TLSRequirement("starttls", policy="dane", policy_domain=self.policy_domain,
                                      tlsa=tlsa.records, refuse=tlsa.failure)
        return self

    def allows(self, host: str) -> bool:
        """MTA-STS enforce (RFC 8461 §4.1): the MX host must match the policy (hosts that
        DANE covers are judged by DANE)."""
        if not self.mx_patterns or any(name == host for name, _ in self.dane_hosts):
            return True
        return any(mx_matches(p, host) for p in self.mx_patterns)


@dataclass(frozen=True, slots=True)
class Hop:
    host: str  # name for SNI and certificate checks; an IP literal for address routes
    port: int


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one recipient domain's mail goes. ``key`` groups domains that share a
    destination so their messages share connections (everything, for a smarthost)."""

    key: str
    domain: str
    hops: tuple[Hop, ...]
    tls: TLSRequirement
    username: str = ""
    password_file: str = ""
    via_route: bool = False
    implicit_mx: bool = False  # no MX records: the domain's own A/AAAA


class TLSPolicyHook(Protocol):
    async def requirement(
        self, domain: str, mx_hosts: Sequence[str], default: TLSRequirement
    ) -> TLSRequirement: ...


class ConfigTLSPolicy:
    """The ``[[queue.tls_policies]]`` table: first match wins."""

    def __init__(self, policies: Sequence[TLSPolicy]) -> None:
        self.policies = list(policies)

    async def requirement(
        self, domain: str, mx_hosts: Sequence[str], default: TLSRequirement
    ) -> TLSRequirement:
        for pol in self.policies:
            if pol.matches(domain):
                return {
                    "none": TLSRequirement("none"),
                    "may": TLSRequirement("opportunistic"),
                    "encrypt": TLSRequirement("starttls"),
                    "verify": TLSRequirement("starttls", verify=True),
                }[pol.level]
        return default


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class RouteFailure(Exception):
    """The domain cannot be routed; ``reply`` says why (5xx: bounce, 4xx: retry)."""

    def __init__(self, reply: ServerReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class Router:
    def __init__(
        self,
        resolver: Resolver,
        config: QueueConfig,
        routes: Sequence[Route] = (),
        *,
        local_hostname: str = "",
        tls_policy: TLSPolicyHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.resolver = resolver
        self.config = config
        self.routes = list(routes)
        self.local_hostname = local_hostname.lower()
        self.tls_policy: TLSPolicyHook = tls_policy or ConfigTLSPolicy(config.tls_policies)
        self.rng = rng or random.Random()

    def static_route(self, domain: str) -> Route | None:
        # An exact domain beats ".parent" beats "*", whatever the order in the file.
        exact = [r for r in self.routes if domain_key(r.domain) == domain]
        if exact:
            return exact[0]
        subs = [r for r in self.routes if r.domain.startswith(".") and r.matches(domain)]
        if subs:
            return max(subs, key=lambda r: len(r.domain))
        return next((r for r in self.routes if r.domain == "*"), None)

    async def destination(self, domain: str) -> Destination:
        """Raises ``RouteFailure``."""
        domain = domain_key(domain)
        if domain.startswith("[") and domain.endswith("]"):
            # An address literal (RFC 5321 4.1.3): deliver to that address, no MX.
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            if not is_ip_literal(literal):
                raise RouteFailure(local_reply(553, "5.1.3", f"bad address literal {domain}"))
            return Destination(
                f"literal:{literal}", domain, (Hop(literal, self.config.smtp_port),),
                TLSRequirement("opportunistic"),
            )
        route = self.static_route(domain)
        if route is not None:
            return Destination(
                key=f"route:{route.host}:{route.port}:{route.tls}:{route.username}",
                domain=domain,
                hops=(Hop(route.host.strip("[]"), route.port),),
                tls=TLSRequirement(route.tls, route.verify),
                username=route.username,
                password_file=route.password_file,
                via_route=True,
            )
        try:
            records = await self.resolver.mx(domain)
        except TemporaryDNSError as exc:
            raise RouteFailure(local_reply(451, "4.4.3", f"MX lookup failed: {exc}")) from exc
        if any(r.host in ("", ".") for r in records):
            # RFC 7505 §4.1: a null MX means no mail; do not fall back to A/AAAA.
            raise RouteFailure(
                local_reply(556, "5.1.10", f"{domain} does not accept mail (null MX)")
            )
        if records:
            by_pref: dict[int, list[str]] = {}
            for r in records:
                by_pref.setdefault(r.preference, []).append(r.host.lower().rstrip("."))
            hosts: list[str] = []
            for pref in sorted(by_pref):
                group = by_pref[pref]
                self.rng.shuffle(group)  # RFC 5321 §5.1: spread load over equal MXs
                hosts.extend(h for h in group if h not in hosts)
            if self.local_hostname and self.local_hostname in hosts:
                # RFC 5321 §5.1: only MXs more preferred than ourselves; none: a loop.
                hosts = hosts[: hosts.index(self.local_hostname)]
                if not hosts:
                    raise RouteFailure(
                        local_reply(554, "5.4.6", f"mail for {domain} loops back to myself")
                    )
        else:
            hosts = [domain]  # implicit MX (RFC 5321 §5.1)
        tls = await self.tls_policy.requirement(domain, hosts, TLSRequirement("opportunistic"))
        if tls.mx_patterns:  # MTA-STS enforce: never an MX outside the policy
            hosts = [h for h in hosts if tls.allows(h)]
            if not hosts:
                raise RouteFailure(local_reply(
                    451, "4.7.5", f"MTA-STS policy of {domain} (mode enforce) allows none of "
                    f"its MX hosts (policy mx: {', '.join(tls.mx_patterns)})"))
        return Destination(
            key=f"mx:{domain}",
            domain=domain,
            hops=tuple(Hop(h, self.config.smtp_port) for h in hosts),
            tls=tls,
            implicit_mx=not records,
        )

    async def addresses(self, host: str) -> list[str]:
        """IPv6 and IPv4 addresses of a host, interleaved (RFC 6555 spirit: one family's
        trouble does not stall the other). Raises ``TemporaryDNSError``."""
        if is_ip_literal(host):
            return [host.strip("[]")]
        v6 = await self.resolver.aaaa(host)
        v4 = await self.resolver.a(host)
        out: list[str] = []
        for i in range(max(len(v6), len(v4))):
            if i < len(v6):
                out.append(v6[i])
            if i < len(v4):
                out.append(v4[i])
        return out
