"""The one call the MTA makes after DATA: SPF, DKIM, DMARC, Authentication-Results, verdict.

    verdict = await check_inbound(message, client_ip, helo, mail_from, resolver, hostname)
    if verdict.action == "reject":
        reply(*verdict.reject_reply)                   # 550 5.7.1 ...
    else:
        deliver(verdict.message, mailbox=verdict.mailbox)   # None = INBOX, else "Junk"
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pochta.dns import Resolver
from pochta.mail.addresses import domain_of
from pochta.mail.headers import split_header
from pochta.policy import arc, authresults, dkim, dmarc, spf
from pochta.policy.settings import DKIMSettings, DMARCSettings, SPFSettings

_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}


@dataclass(frozen=True)
class InboundVerdict:
    message: bytes  # forged A-R fields removed, our A-R field prepended
    header_to_prepend: bytes  # our Authentication-Results field (already in ``message``)
    action: str  # "accept", "quarantine" or "reject"
    reject_reply: tuple[int, str, str] | None  # (550, "5.7.1", text) when action is reject
    mailbox: str | None  # where to deliver: None for the usual mailbox, else e.g. "Junk"
    spf: spf.SPFResult | None
    dkim: list[dkim.DKIMResult]
    dmarc: dmarc.DMARCResult | None
    log: dict[str, str] = field(default_factory=dict)


def from_domains(message: bytes) -> list[str]:
    """Domains of the RFC 5322.From addresses, in order, without duplicates."""
    head, _ = split_header(message)
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        values = [str(v) for v in msg.get_all("From") or []]
    except Exception:  # a header we cannot parse has no usable From
        return []
    out: list[str] = []
    for _, addr in email.utils.getaddresses(values):
        domain = domain_of(addr)
        if domain and domain not in out:
            out.append(domain)
    return out


async def check_inbound(
    message: bytes,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: Resolver,
    hostname: str,
    *,
    dkim_settings: DKIMSettings | None = None,
    spf_settings: SPFSettings | None = None,
    dmarc_settings: DMARCSettings | None = None,
    rand: Callable[[], float] = random.random,
    arc_trusted: Sequence[str] | None = None,
) -> InboundVerdict:
    """``arc_trusted``: verify ARC chains (None: do not), and let a passing chain whose
    latest sealer is one of these override a DMARC fail (pochta.policy.arc)."""
    dk_cfg = dkim_settings or DKIMSettings()
    spf_cfg = spf_settings or SPFSettings()
    dm_cfg = dmarc_settings or DMARCSettings()

    async def no_spf() -> spf.SPFResult | None:
        return None

    async def no_dkim() -> list[dkim.DKIMResult]:
        return []

    spf_res, dkim_res = await asyncio.gather(
        spf.check_spf(client_ip, mail_from, helo, resolver, receiver=hostname)
        if spf_cfg.check else no_spf(),
        dkim.verify(message, resolver) if dk_cfg.verify else no_dkim(),
    )

    dmarc_res: dmarc.DMARCResult | None = None
    domains = from_domains(message)
    if dm_cfg.check and domains:
        # several From domains: each is evaluated and the strictest outcome counts, so a
        # second From field cannot dodge a policy (RFC 7489 §6.6.1)
        results = [await dmarc.evaluate(d, spf_res, dkim_res, resolver, rand=rand)
                   for d in domains]
        dmarc_res = max(results, key=lambda r: (_STRENGTH[r.disposition], r.result == "fail"))
    elif dm_cfg.check:
        dmarc_res = dmarc.DMARCResult("permerror", "", reason="no From address")

    disposition = dmarc_res.disposition if dmarc_res else "none"
    spf_failed = spf_res is not None and spf_res.result == "fail"
    dmarc_passed = dmarc_res is not None and dmarc_res.result == "pass"
    # ARC (RFC 8617): a trusted forwarder saw DMARC pass before it changed the message
    arc_res: arc.ARCResult | None = None
    if arc_trusted is not None:
        arc_res = await arc.verify(message, resolver)
        if (dmarc_res is not None and dmarc_res.result == "fail"
                and arc.trusted_override(arc_res, arc_trusted)):
            disposition = "none"
            dmarc_passed = True  # for the SPF-only rule below
    if spf_failed and not dmarc_passed and (
        _STRENGTH[spf_cfg.fail_action] > _STRENGTH[disposition]
    ):
        disposition = spf_cfg.fail_action
    if disposition == "reject" and dm_cfg.reject_action == "quarantine":
        disposition = "quarantine"

    action = {"none": "accept", "quarantine": "quarantine", "reject": "reject"}[disposition]
    reply: tuple[int, str, str] | None = None
    if action == "reject":
        if dmarc_res is not None and dmarc_res.disposition == "reject":
            text = (f"Message rejected by the DMARC policy of {dmarc_res.from_domain} "
                    f"(neither SPF nor DKIM aligned and passing)")
        else:
            text = f"SPF check failed for {spf_res.domain if spf_res else 'sender'}"
        reply = (550, "5.7.1", text)

    header = authresults.build(hostname, spf_res, dkim_res, dmarc_res,
                               [arc.resinfo(arc_res)] if arc_res is not None else [])
    cleaned = authresults.strip_forged(message, hostname)
    log = {
        "spf": spf_res.result if spf_res else "off",
        "spf_domain": spf_res.domain if spf_res else "",
        "spf_helo": spf_res.helo.result if spf_res and spf_res.helo else "",
        "dkim": ",".join(f"{r.result}:{r.domain}" for r in dkim_res) or "none",
        "dmarc": dmarc_res.result if dmarc_res else "off",
        "dmarc_policy": dmarc_res.policy if dmarc_res else "",
        "from_domain": dmarc_res.from_domain if dmarc_res else ",".join(domains),
        "action": action,
    }
    if arc_res is not None:
        log["arc"] = arc_res.cv + (f":{arc_res.sealer}" if arc_res.sealer else "")
        if dmarc_res is not None and dmarc_res.result == "fail" and disposition == "none" \
                and arc.trusted_override(arc_res, arc_trusted or ()):
            log["arc_override"] = arc_res.sealer
    return InboundVerdict(
        message=header + cleaned,
        header_to_prepend=header,
        action=action,
        reject_reply=reply,
        mailbox=dm_cfg.quarantine_mailbox if action == "quarantine" else None,
        spf=spf_res,
        dkim=list(dkim_res),
        dmarc=dmarc_res,
        log=log,
    )
