"""DMARC (RFC 7489): policy discovery, identifier alignment, disposition.

The organisational domain comes from the Public Suffix List shipped by the
``publicsuffixlist`` package (offline). ``evaluate`` takes the SPF and DKIM results already
computed for the message and returns what should happen to it.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key
from pochta.policy.dkim import DKIMResult
from pochta.policy.spf import SPFResult

POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself if it is a
    public suffix or has no known suffix)."""
    d = domain_key(domain)
    if not d:
        return d
    org = _psl().privatesuffix(d)
    return org if org else d


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment (§3.1): strict needs equal names, relaxed equal org domains."""
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()


def parse_record(text: str) -> DMARCRecord | None:
    """A DMARC record or None if it is not a usable one (§6.3, §6.6.3)."""
    parts = [p.strip() for p in text.split(";")]
    if not parts or re.sub(r"\s+", "", parts[0]) != "v=DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            continue  # malformed tag: ignored, like unknown ones
        name = name.strip().lower()
        tags.setdefault(name, value.strip())
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    ruf = tuple(u.strip() for u in tags.get("ruf", "").split(",") if u.strip())
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # §6.6.3: no valid p but a valid rua: as if p=none; otherwise no record at all
        if rua:
            p = "none"
        else:
            return None
    sp = tags.get("sp", "").lower()
    if sp not in POLICIES:
        sp = p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DMARCRecord(
        p=p, sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(max(pct, 0), 100), rua=rua, ruf=ruf,
    )


@dataclass(frozen=True, slots=True)
class DMARCResult:
    """``result`` is pass, fail, none (no policy), temperror or permerror (RFC 8601).
    ``disposition`` is what to do: none, quarantine or reject (after pct sampling)."""

    result: str
    from_domain: str
    disposition: str = "none"
    policy: str = ""  # the policy that applied (p or sp value), "" if no record
    policy_domain: str = ""  # where the record was found
    org_domain: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str = ""  # the aligned passing d=, if any
    sampled_out: bool = False  # failed, but pct spared it the full policy
    record: DMARCRecord | None = field(default=None, compare=False)
    reason: str = ""


async def _lookup(name: str, resolver: Resolver) -> list[DMARCRecord]:
    records = await resolver.txt(f"_dmarc.{name}")
    parsed = [parse_record(r) for r in records]
    return [r for r in parsed if r is not None]


async def evaluate(
    from_domain: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    resolver: Resolver,
    *,
    rand: Callable[[], float] = random.random,
) -> DMARCResult:
    """Evaluate DMARC for the RFC 5322.From domain. ``rand`` returns [0, 1) for pct."""
    domain = domain_key(from_domain)
    if not domain or "." not in domain:
        return DMARCResult("permerror", domain, reason="no usable From domain")
    org = organizational_domain(domain)
    # §6.6.3 policy discovery: the From domain, then its organisational domain
    policy_domain = domain
    try:
        found = await _lookup(domain, resolver)
        if not found and org != domain:
            policy_domain = org
            found = await _lookup(org, resolver)
    except TemporaryDNSError as exc:
        return DMARCResult("temperror", domain, org_domain=org, reason=str(exc))
    if len(found) != 1:
        why = "no DMARC record" if not found else "more than one DMARC record"
        return DMARCResult("none", domain, org_domain=org, reason=why)
    rec = found[0]

    dkim_pass = [r for r in dkim if r.result == "pass" and aligned(r.domain, domain, rec.adkim)]
    spf_ok = (
        spf is not None and spf.result == "pass" and aligned(spf.domain, domain, rec.aspf)
    )
    # the subdomain policy applies when the record came from the organisational domain
    requested = rec.sp if policy_domain != domain else rec.p
    base = DMARCResult(
        "pass", domain, "none", policy=requested, policy_domain=policy_domain, org_domain=org,
        spf_aligned=spf_ok, dkim_aligned=bool(dkim_pass),
        dkim_domain=dkim_pass[0].domain if dkim_pass else "", record=rec,
    )
    if spf_ok or dkim_pass:
        return base
    disposition = requested
    sampled_out = False
    # §6.6.4: pct < 100 applies the policy to that share; the rest gets the next weaker one
    if rec.pct < 100 and rand() * 100 >= rec.pct:
        disposition = _WEAKER[requested]
        sampled_out = True
    return dataclasses.replace(
        base, result="fail", disposition=disposition, sampled_out=sampled_out,
        reason="neither SPF nor DKIM aligned and passing",
    )
