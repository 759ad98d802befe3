"""TLS-RPT (RFC 8460): what outbound TLS sessions did, per recipient (policy) domain and
day, and the daily aggregate report (JSON, gzip) mailed to the domain's ``rua``.

``TLSResultRecorder`` is the queue's ``TLSObserver``: it adds each session's result to the
store (``record_tls_result``); ``build_report`` turns one domain's rows of one day into
the RFC 8460 §4.4 JSON; ``report_message`` wraps it into the §5.3 mail
(multipart/report; report-type="tlsrpt"); ``send_reports`` does a day's reports.
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import gzip
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.tls import client_context
from pochta.queue.routing import Destination, TLSRequirement
from pochta.storage.interfaces_transport import TLSResultRow, TransportSecurityStore

log = logging.getLogger("pochta.tlsrpt")


def utc_day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


def policy_type(tls: TLSRequirement) -> str:
    if tls.policy == "dane":
        return "tlsa"
    if tls.policy in ("sts", "sts-testing"):
        return "sts"
    return "no-policy-found"


class TLSResultRecorder:
    def __init__(self, store: TransportSecurityStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def __call__(self, dest: Destination, tls: TLSRequirement, host: str, address: str,
                       result: str) -> None:
        if dest.via_route or not dest.domain or dest.domain.startswith("["):
            return  # a static route or an address literal: no policy domain to report to
        lines: tuple[str, ...] = tls.policy_lines
        if tls.policy == "dane":
            lines = tuple(f"{r}" for r in tls.tlsa)
        await self.store.record_tls_result(
            utc_day(self.clock()), dest.domain, policy_type(tls), lines, host, result,
            address)

    def policy_failure(self, domain: str, kind: str, lines: tuple[str, ...], host: str,
                       result: str) -> Awaitable[None]:
        return self.store.record_tls_result(utc_day(self.clock()), domain, kind, lines, host,
                                            result)


def build_report(
    rows: Sequence[TLSResultRow], day: str, organization: str, contact: str,
    report_id: str | None = None,
) -> dict[str, Any]:
    """RFC 8460 §4.4 for one policy domain's rows of one day."""
    start = f"{day}T00:00:00Z"
    end_day = (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()
    policies: dict[tuple[str, tuple[str, ...], str], list[TLSResultRow]] = {}
    for r in rows:
        policies.setdefault((r.policy_type, r.policy_string, r.policy_domain), []).append(r)
    out = []
    for (ptype, pstring, pdomain), group in policies.items():
        ok = sum(r.count for r in group if r.result == "success")
        failed = [r for r in group if r.result != "success"]
        policy: dict[str, Any] = {"policy-type": ptype, "policy-domain": pdomain}
        if pstring:
            policy["policy-string"] = list(pstring)
        if ptype == "sts":
            mx = [line.split(":", 1)[1].strip() for line in pstring
                  if line.startswith("mx:")]
            if mx:
                policy["mx-host"] = mx
        entry: dict[str, Any] = {
            "policy": policy,
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": sum(r.count for r in failed)},
        }
        if failed:
            entry["failure-details"] = [
                {"result-type": r.result, "receiving-mx-hostname": r.mx_host,
                 **({"receiving-ip": r.receiving_ip} if r.receiving_ip else {}),
                 "failed-session-count": r.count}
                for r in failed
            ]
        out.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": start, "end-datetime": f"{end_day}T00:00:00Z"},
        "contact-info": contact,
        "report-id": report_id or f"{day}_{secrets.token_hex(8)}",
        "policies": out,
    }


def parse_rua(records: list[str]) -> list[str]:
    """The rua URIs of ``_smtp._tls.DOMAIN`` (RFC 8460 §3), one v=TLSRPTv1 record only."""
    recs = [r for r in records if r.replace(" ", "").lower().startswith("v=tlsrptv1")]
    if len(recs) != 1:
        return []
    for part in recs[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "rua":
            return [u.strip() for u in value.split(",") if u.strip()]
    return []


def report_message(
    report: dict[str, Any], policy_domain: str, sender: str, to: str, reporter: str,
) -> bytes:
    """RFC 8460 §5.3: the report as a gzip attachment of a multipart/report mail."""
    day = report["date-range"]["start-datetime"][:10]
    end = report["date-range"]["end-datetime"][:10]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = (f"Report Domain: {policy_domain} Submitter: {reporter} "
                      f"Report-ID: <{report['report-id']}>")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=reporter)
    msg["TLS-Report-Domain"] = policy_domain
    msg["TLS-Report-Submitter"] = reporter
    msg.set_content(f"TLS-RPT report for {policy_domain} from {reporter}, {day} to {end}.\n")
    msg.add_attachment(
        gzip.compress(json.dumps(report, indent=1).encode()),
        maintype="application", subtype="tlsrpt+gzip",
        filename=f"{reporter}!{policy_domain}!{day}!{end}.json.gz",
    )
    boundary = msg.get_boundary()
    del msg["Content-Type"]
    msg["Content-Type"] = f'multipart/report; report-type="tlsrpt"; boundary="{boundary}"'
    return msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))


# (message bytes, envelope sender, recipient address)
MailSender = Callable[[bytes, str, str], Awaitable[None]]
# (https URL, gzip'd JSON report): raises OSError / ValueError on failure
HTTPSPoster = Callable[[str, bytes], Awaitable[None]]


async def https_post(url: str, body: bytes, *, cafile: str | None = None,
                     timeout: float = 60.0, port: int | None = None) -> None:
    """RFC 8460 §5.4: POST the report as application/tlsrpt+gzip; any 2xx is success.
    The certificate is checked against the system store (or ``cafile``)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url}")
    host = parts.hostname
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ctx = client_context(cafile=cafile)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host, port or parts.port or 443, ssl=ctx, server_hostname=host), timeout)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Pochta\r\n"
                     "Content-Type: application/tlsrpt+gzip\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                     .encode("ascii") + body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    fields = status.split()
    if len(fields) < 2 or not fields[1].startswith(b"2"):
        raise ValueError(f"{url}: {status.decode('latin-1').strip() or 'no answer'}")


async def send_reports(
    store: TransportSecurityStore, resolver: Resolver, day: str, send: MailSender, *,
    reporter: str, sender: str, organization: str, post: HTTPSPoster | None = None,
) -> list[tuple[str, str]]:
    """Build and send ``day``'s report for every domain with results and a rua (mailto:
    by mail, https: by ``post``); forget the rows of each domain once handled. Returns
    (domain, recipient or URL) sent."""
    rows = await store.tls_results(day)
    domains = sorted({r.policy_domain for r in rows})
    sent = []
    for domain in domains:
        try:
            rua = parse_rua(await resolver.txt(f"_smtp._tls.{domain}"))
        except TemporaryDNSError as exc:
            log.info("tls-rpt %s: _smtp._tls lookup failed (%s); trying tomorrow", domain, exc)
            continue
        mine = [r for r in rows if r.policy_domain == domain]
        mailto = [u[7:].split("?")[0] for u in rua if u.lower().startswith("mailto:")]
        https = [u for u in rua if u.lower().startswith("https:")]
        report = build_report(mine, day, organization, sender)
        for url in https:
            if post is None:
                break
            try:
                await post(url, gzip.compress(json.dumps(report).encode()))
                sent.append((domain, url))
                log.info("tls-rpt %s: report for %s posted to %s", domain, day, url)
            except (OSError, ValueError, TimeoutError) as exc:
                log.warning("tls-rpt %s: POST to %s failed: %s", domain, url, exc)
        if mailto:
            for to in mailto:
                data = report_message(report, domain, sender, to, reporter)
                await send(data, sender, to)
                sent.append((domain, to))
                log.info("tls-rpt %s: report for %s sent to %s", domain, day, to)
        await store.delete_tls_results(day, domain)
    return sent
