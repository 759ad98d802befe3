"""The outbound TLS policy hook (``pochta.queue.routing.TLSPolicyHook``) that combines
the admin's ``[[queue.tls_policies]]``, MTA-STS (RFC 8461) and DANE (RFC 7672).

Order: an explicit ``[[queue.tls_policies]]`` entry for the domain wins (an admin's way to
override a broken policy); otherwise MTA-STS decides the domain's requirement
(``enforce``: STARTTLS with a certificate valid for the MX name and only MX hosts the
policy names; ``testing``: delivered as before, failures reported; ``none``: nothing), and
DANE, where the MX RRset is DNSSEC-secure and a host has TLSA records, takes precedence
for that host (RFC 8461 §2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pochta.queue.dane import DANE
from pochta.queue.routing import ConfigTLSPolicy, TLSPolicyHook, TLSRequirement
from pochta.transport_security.mtasts import MTASTS, policy_lines


class TransportSecurityPolicy:
    def __init__(
        self, base: TLSPolicyHook, mtasts: MTASTS | None = None, dane: DANE | None = None,
    ) -> None:
        self.base = base
        self.mtasts = mtasts
        self.dane = dane

    async def requirement(
        self, domain: str, mx_hosts: Sequence[str], default: TLSRequirement
    ) -> TLSRequirement:
        if isinstance(self.base, ConfigTLSPolicy):
            if any(p.matches(domain) for p in self.base.policies):
                # [[queue.tls_policies]] names this domain: the admin decides
                return await self.base.requirement(domain, mx_hosts, default)
        else:
            req = await self.base.requirement(domain, mx_hosts, default)
            if req != default:
                return req
        req = dataclasses.replace(default, policy_domain=domain)
        if self.mtasts is not None:
            sts = await self.mtasts.policy(domain)
            if sts is not None and sts.mode == "enforce":
                req = TLSRequirement("starttls", verify=True, policy="sts",
                                     policy_domain=domain, policy_lines=policy_lines(sts),
                                     mx_patterns=sts.mx)
            elif sts is not None and sts.mode == "testing":
                req = TLSRequirement("opportunistic", policy="sts-testing",
                                     policy_domain=domain, policy_lines=policy_lines(sts))
        if self.dane is not None and await self.dane.mx_secure(domain):
            hosts = []
            for host in mx_hosts:
                tlsa = await self.dane.host(host)
                if tlsa is not None:
                    hosts.append((host, tlsa))
            if hosts:
                req = dataclasses.replace(req, dane_hosts=tuple(hosts))
        return req
