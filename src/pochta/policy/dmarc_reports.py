"""DMARC aggregate reports (RFC 7489 §7.2, appendix C).

Outgoing: every inbound message's DMARC evaluation is recorded in the store
(``record_verdict``, only for domains that ask for reports with ``rua=``); once a day the
rows of each policy domain become one XML report (gzip) mailed to each ``rua`` mailto:
address, after the external-destination check of §7.1 (a ``rua`` outside the policy
domain's organisational domain must publish ``<domain>._report._dmarc.<rua-domain>``).

Incoming: ``parse_aggregate`` reads a report (XML, .xml.gz or .zip, namespaced or not),
``summarize`` turns it into lines (sources, volumes, pass/fail) with a warning for every
source that failed both SPF and DKIM for our domain (an unknown sender, or a forger).
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import gzip
import io
import logging
import secrets
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_of
from pochta.policy.dmarc import DMARCRecord, organizational_domain, parse_record
from pochta.storage.interfaces_transport import DMARCResultRow, TransportSecurityStore

log = logging.getLogger("pochta.dmarc")


def utc_day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


# -- recording ---------------------------------------------------------------------------


async def record_verdict(store: TransportSecurityStore, verdict: Any, source_ip: str,
                         config: object = None, clock: Callable[[], float] = time.time) -> None:
    """Record an ``InboundVerdict``'s DMARC outcome when the domain wants reports (and
    ``[transport_security] dmarc_reports`` is on)."""
    ts = getattr(config, "transport_security", None)
    if ts is not None and not getattr(ts, "dmarc_reports", True):
        return
    res = getattr(verdict, "dmarc", None)
    if res is None or res.result not in ("pass", "fail") or res.record is None:
        return
    if not res.record.rua:
        return
    spf = getattr(verdict, "spf", None)
    dkims = getattr(verdict, "dkim", []) or []
    disposition = {"accept": "none"}.get(verdict.action, verdict.action)
    try:
        await store.record_dmarc_result(
            utc_day(clock()), res.from_domain, source_ip, disposition,
            "pass" if res.dkim_aligned else "fail", "pass" if res.spf_aligned else "fail",
            res.policy,
            envelope_from=spf.domain if spf is not None else "",
            spf_auth=f"{spf.domain}:{spf.result}" if spf is not None else "",
            dkim_auth=",".join(f"{d.domain}:{d.result}" for d in dkims),
        )
    except Exception:  # reports are a courtesy: never fail a delivery for them
        log.exception("could not record a DMARC result")


_pending: set[asyncio.Task[None]] = set()


def record_verdict_soon(store: TransportSecurityStore, verdict: Any, source_ip: str,
                        config: object = None) -> None:
    """``record_verdict`` in the background: the SMTP reply does not wait for it."""
    task = asyncio.get_running_loop().create_task(
        record_verdict(store, verdict, source_ip, config))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


# -- building ----------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def build_aggregate(
    rows: Sequence[DMARCResultRow], policy_domain: str, record: DMARCRecord, day: str,
    org_name: str, contact: str, report_id: str | None = None,
) -> bytes:
    """The appendix C XML for one policy domain's rows of one UTC day."""
    begin = int(datetime.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
    root = ET.Element("feedback")
    _sub(root, "version", "1.0")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", contact)
    _sub(meta, "report_id", report_id or f"{day}.{policy_domain}.{secrets.token_hex(6)}")
    rng = _sub(meta, "date_range")
    _sub(rng, "begin", begin)
    _sub(rng, "end", begin + 86399)
    pub = _sub(root, "policy_published")
    _sub(pub, "domain", policy_domain)
    _sub(pub, "adkim", record.adkim)
    _sub(pub, "aspf", record.aspf)
    _sub(pub, "p", record.p)
    _sub(pub, "sp", record.sp)
    _sub(pub, "pct", record.pct)
    _sub(pub, "fo", getattr(record, "fo", "0") or "0")
    for r in rows:
        rec = _sub(root, "record")
        row = _sub(rec, "row")
        _sub(row, "source_ip", r.source_ip)
        _sub(row, "count", r.count)
        ev = _sub(row, "policy_evaluated")
        _sub(ev, "disposition", r.disposition)
        _sub(ev, "dkim", r.dkim)
        _sub(ev, "spf", r.spf)
        ids = _sub(rec, "identifiers")
        _sub(ids, "envelope_from", r.envelope_from)
        _sub(ids, "header_from", r.header_from)
        auth = _sub(rec, "auth_results")
        for item in filter(None, r.dkim_auth.split(",")):
            domain, _, result = item.rpartition(":")
            d = _sub(auth, "dkim")
            _sub(d, "domain", domain)
            _sub(d, "result", result if result in _DKIM_RESULTS else "permerror")
        domain, _, result = r.spf_auth.rpartition(":")
        s = _sub(auth, "spf")
        _sub(s, "domain", domain or r.envelope_from or r.header_from)
        _sub(s, "scope", "mfrom")
        _sub(s, "result", result if result in _SPF_RESULTS else "none")
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


_DKIM_RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
_SPF_RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")


def report_mail(xml: bytes, policy_domain: str, reporter: str, sender: str, to: str,
                day: str, report_id: str) -> bytes:
    """RFC 7489 §7.2.1.1: the gzip'd XML attached, the filename and Subject it names."""
    begin = int(datetime.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = (f"Report Domain: {policy_domain} Submitter: {reporter} "
                      f"Report-ID: <{report_id}>")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=reporter)
    msg.set_content(f"DMARC aggregate report for {policy_domain} from {reporter} ({day}).\n")
    msg.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip",
                       filename=f"{reporter}!{policy_domain}!{begin}!{begin + 86399}.xml.gz")
    data: bytes = msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))
    return data


async def discover(domain: str, resolver: Resolver) -> tuple[str, DMARCRecord] | None:
    """(the policy domain, its record): the domain's own record, else its organisational
    domain's (§6.6.3). Raises ``TemporaryDNSError``."""
    for name in dict.fromkeys((domain, organizational_domain(domain))):
        found = [r for r in (parse_record(t) for t in await resolver.txt(f"_dmarc.{name}"))
                 if r is not None]
        if len(found) == 1:
            return name, found[0]
        if found:
            return None
    return None


async def allowed_destinations(policy_domain: str, rua: Sequence[str],
                               resolver: Resolver) -> list[str]:
    """The mailto: addresses of ``rua`` we may send to (§7.1)."""
    out = []
    for uri in rua:
        if not uri.lower().startswith("mailto:"):
            continue
        addr = uri[7:].split("!")[0].split("?")[0].strip()
        dest = domain_of(addr)
        if not dest:
            continue
        if organizational_domain(dest) != organizational_domain(policy_domain):
            try:
                texts = await resolver.txt(f"{policy_domain}._report._dmarc.{dest}")
            except TemporaryDNSError:
                continue
            if not any(t.replace(" ", "").startswith("v=DMARC1") for t in texts):
                log.info("dmarc report for %s: %s did not agree to receive it (§7.1)",
                         policy_domain, addr)
                continue
        out.append(addr)
    return out


MailSender = Callable[[bytes, str, str], Awaitable[None]]


async def send_reports(
    store: TransportSecurityStore, resolver: Resolver, day: str, send: MailSender, *,
    reporter: str, sender: str, organization: str,
) -> list[tuple[str, str]]:
    """Mail ``day``'s aggregate reports and forget their rows."""
    rows = await store.dmarc_results(day)
    by_policy: dict[str, tuple[DMARCRecord, list[DMARCResultRow]]] = {}
    handled: list[str] = []
    for header_from in sorted({r.header_from for r in rows}):
        try:
            found = await discover(header_from, resolver)
        except TemporaryDNSError as exc:
            log.info("dmarc report for %s: lookup failed (%s); trying tomorrow", header_from,
                     exc)
            continue
        handled.append(header_from)
        if found is None:
            continue
        policy_domain, record = found
        entry = by_policy.setdefault(policy_domain, (record, []))
        entry[1].extend(r for r in rows if r.header_from == header_from)
    sent = []
    for policy_domain, (record, mine) in sorted(by_policy.items()):
        to_list = await allowed_destinations(policy_domain, record.rua, resolver)
        if not to_list:
            continue
        report_id = f"{day}.{policy_domain}.{secrets.token_hex(6)}"
        xml = build_aggregate(mine, policy_domain, record, day, organization, sender,
                              report_id)
        for to in to_list:
            await send(report_mail(xml, policy_domain, reporter, sender, to, day, report_id),
                       sender, to)
            sent.append((policy_domain, to))
    for header_from in handled:
        await store.delete_dmarc_results(day, header_from)
    return sent


# -- reading received reports ------------------------------------------------------------


@dataclass
class AggregateReport:
    org_name: str
    report_id: str
    begin: int
    end: int
    domain: str
    policy: str
    records: list[dict[str, Any]] = field(default_factory=list)


def _strip_ns(el: ET.Element) -> None:
    for node in el.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]


def _text(el: ET.Element | None, path: str, default: str = "") -> str:
    if el is None:
        return default
    found = el.find(path)
    return (found.text or "").strip() if found is not None and found.text else default


def unpack(data: bytes) -> list[bytes]:
    """XML documents in a report file: plain, gzip or zip (Google sends zip, Microsoft
    gzip)."""
    if data[:2] == b"\x1f\x8b":
        return [gzip.decompress(data)]
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [z.read(n) for n in z.namelist() if n.lower().endswith(".xml")]
    return [data]


def parse_aggregate(xml: bytes) -> AggregateReport:
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise ValueError("DTDs and entities are refused")
    # no DTD, hence no entity expansion (the XML attacks S314 is about)
    root = ET.fromstring(xml)  # noqa: S314
    _strip_ns(root)
    if root.tag != "feedback":
        raise ValueError(f"not a DMARC aggregate report (root <{root.tag}>)")
    meta = root.find("report_metadata")
    pub = root.find("policy_published")
    rep = AggregateReport(
        org_name=_text(meta, "org_name", "?"), report_id=_text(meta, "report_id", "?"),
        begin=int(_text(meta, "date_range/begin", "0") or 0),
        end=int(_text(meta, "date_range/end", "0") or 0),
        domain=_text(pub, "domain", "?"), policy=_text(pub, "p", "?"),
    )
    for rec in root.findall("record"):
        rep.records.append({
            "source_ip": _text(rec, "row/source_ip"),
            "count": int(_text(rec, "row/count", "0") or 0),
            "disposition": _text(rec, "row/policy_evaluated/disposition", "none"),
            "dkim": _text(rec, "row/policy_evaluated/dkim", "fail"),
            "spf": _text(rec, "row/policy_evaluated/spf", "fail"),
            "header_from": _text(rec, "identifiers/header_from"),
        })
    return rep


def summarize(rep: AggregateReport) -> list[str]:
    def when(ts: int) -> str:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")

    total = sum(r["count"] for r in rep.records)
    passed = sum(r["count"] for r in rep.records if "pass" in (r["dkim"], r["spf"]))
    out = [f"{rep.org_name}: {rep.domain} (p={rep.policy}), {when(rep.begin)} to "
           f"{when(rep.end)} UTC, report {rep.report_id}",
           f"  {total} message(s): {passed} pass DMARC, {total - passed} fail"]
    for r in sorted(rep.records, key=lambda r: -r["count"]):
        verdict = "pass" if "pass" in (r["dkim"], r["spf"]) else "FAIL"
        out.append(f"  {r['source_ip']:<39} {r['count']:>6}  {verdict:<4} dkim={r['dkim']} "
                   f"spf={r['spf']} disposition={r['disposition']} from={r['header_from']}")
    for r in rep.records:
        if r["dkim"] != "pass" and r["spf"] != "pass":
            out.append(f"  warning: {r['source_ip']} sent {r['count']} message(s) as "
                       f"{r['header_from'] or rep.domain} failing both SPF and DKIM: an unknown "
                       "sender (add it to SPF / give it a DKIM key) or a forger")
    return out
