"""DNS lists of domains (RFC 5782 §2.3): RHSBL for the sender's domains (the envelope
sender's and the From's) and URIBL for the domains of the links in the message's text,
e.g. Spamhaus DBL or SURBL. Sites use the DNS lists' syntax (``zone``, ``zone*weight``,
``zone=127.0.1.[2..99]*weight``, spam/dnsbl.py); the weights of the sites that list any
of the message's domains add up, and at ``domain_list_threshold`` the message is filed
to Junk or refused (``domain_list_action``).

A domain is asked as itself and as its organisational domain (``mail.shop.example`` and
``shop.example``): DBL lists both kinds, SURBL the registered domain. At most
``MAX_DOMAINS`` domains per message are asked (a message with thousands of links does
not become thousands of DNS queries), each answer cached for its TTL.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..dns import DNSError
from ..policy.dmarc import organizational_domain
from .dnsbl import DNSListCache, Site

log = logging.getLogger("pochta.spam")

MAX_DOMAINS = 20
MAX_TEXT = 512 * 1024  # of decoded text searched for links
_LINK = re.compile(r"(?i)(?:\bhttps?://|\bwww\.)([a-z0-9](?:[a-z0-9-]{0,62}\.)+[a-z]{2,63})\b")
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")


@dataclass(frozen=True, slots=True)
class DomainHit:
    zone: str
    domain: str
    weight: float
    answer: str


@dataclass
class DomainVerdict:
    hits: list[DomainHit] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Each site counts once, however many domains it lists (postscreen's rule for
        IP lists)."""
        best: dict[str, float] = {}
        for hit in self.hits:
            best[hit.zone] = hit.weight
        return sum(best.values())

    def summary(self) -> str:
        return " ".join(f"{h.zone}={h.domain}" for h in self.hits)


def _names(domain: str) -> list[str]:
    domain = domain.lower().rstrip(".")
    if not _HOST.match(domain):
        return []
    org = organizational_domain(domain)
    return [domain] if org == domain or not org else [domain, org]


def sender_domains(sender: str, from_addresses: Sequence[str]) -> list[str]:
    out: list[str] = []
    for address in (sender, *from_addresses):
        for name in _names(address.rpartition("@")[2]) if "@" in address else []:
            if name not in out:
                out.append(name)
    return out


def link_domains(message: bytes) -> list[str]:
    """The domains of the links (``http(s)://`` and ``www.``) in the text parts, in the
    order they first appear."""
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    except Exception:  # an unparsable message: look at its raw bytes instead
        texts = [message[:MAX_TEXT].decode("latin-1")]
    else:
        texts = []
        size = 0
        for part in msg.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            texts.append(payload[: MAX_TEXT - size].decode("latin-1"))
            size += len(payload)
            if size >= MAX_TEXT:
                break
    out: list[str] = []
    for text in texts:
        for m in _LINK.finditer(text):
            for name in _names(m.group(1)):
                if name not in out:
                    out.append(name)
    return out


async def check(sender_names: Sequence[str], link_names: Sequence[str],
                rhsbl: Sequence[Site], uribl: Sequence[Site], cache: DNSListCache
                ) -> DomainVerdict:
    """Ask every site about its domains at once (at most ``MAX_DOMAINS`` in all); a site
    that cannot answer (SERVFAIL, timeout) counts as no hit, and is logged."""
    jobs: list[tuple[Site, str]] = []
    budget = MAX_DOMAINS
    for sites, names in ((rhsbl, sender_names), (uribl, link_names)):
        if not sites:
            continue
        for name in names[:budget]:
            jobs.extend((site, name) for site in sites)
        budget -= min(len(names), budget)

    async def one(site: Site, name: str) -> DomainHit | None:
        try:
            answers = await cache.a(f"{name}.{site.zone}")
        except (DNSError, ValueError) as exc:
            log.warning("domain list %s for %s: %s", site.zone, name, exc)
            return None
        for answer in answers:
            if site.matches(answer):
                return DomainHit(site.zone, name, site.weight, answer)
        return None

    found = await asyncio.gather(*(one(site, name) for site, name in jobs))
    return DomainVerdict([h for h in found if h is not None])
