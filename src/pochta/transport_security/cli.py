"""Admin views of transport security: lines for ``pochta queue show`` and the
``pochta report tls`` command (cached MTA-STS policies, recorded TLS results, received
TLS-RPT reports)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import email
import email.policy
import gzip
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pochta.cliutil import open_store
from pochta.mail.addresses import domain_of
from pochta.policy.dmarc_reports import parse_aggregate, summarize, unpack
from pochta.storage.interfaces_transport import TransportSecurityStore


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")


async def queue_show_lines(store: TransportSecurityStore, recipients: Sequence[str],
                           now: float | None = None) -> list[str]:
    """What transport security says about the recipients' domains (for queue show)."""
    now = time.time() if now is None else now
    out = []
    for domain in sorted({domain_of(r) for r in recipients}):
        pol = await store.get_sts_policy(domain)
        if pol is None:
            out.append(f"MTA-STS:     {domain}: no policy cached")
        else:
            state = "valid" if now < pol.expires else "expired"
            out.append(f"MTA-STS:     {domain}: mode={pol.mode} id={pol.policy_id} "
                       f"mx={','.join(pol.mx) or '-'} ({state} until {_when(pol.expires)} "
                       "UTC)")
        rows = await store.tls_results(policy_domain=domain)
        if rows:
            counts: dict[str, int] = {}
            for r in rows:
                key = f"{r.policy_type}:{r.result}"
                counts[key] = counts.get(key, 0) + r.count
            out.append(f"TLS results: {domain}: " +
                       ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return out


# -- received TLS-RPT reports ------------------------------------------------------------


def parse_tlsrpt(data: bytes) -> dict[str, Any]:
    """A TLS-RPT report (RFC 8460 §4.4), gzip-compressed or not."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    report = json.loads(data)
    if not isinstance(report, dict) or "policies" not in report:
        raise ValueError("not a TLS-RPT report (no policies)")
    return report


def summarize_tlsrpt(report: dict[str, Any]) -> list[str]:
    rng = report.get("date-range", {})
    out = [f"{report.get('organization-name', '?')} ({report.get('contact-info', '-')}), "
           f"{rng.get('start-datetime', '?')} to {rng.get('end-datetime', '?')}, "
           f"report {report.get('report-id', '?')}"]
    for pol in report.get("policies", []):
        p = pol.get("policy", {})
        s = pol.get("summary", {})
        out.append(f"  {p.get('policy-domain', '?')} [{p.get('policy-type', '?')}]: "
                   f"{s.get('total-successful-session-count', 0)} ok, "
                   f"{s.get('total-failure-session-count', 0)} failed")
        for f in pol.get("failure-details", []):
            out.append(f"    {f.get('result-type', '?')}: {f.get('failed-session-count', 0)} "
                       f"at {f.get('receiving-mx-hostname', '?')} "
                       f"{f.get('receiving-ip', '')}".rstrip())
    return out


def extract_report_attachments(message: bytes) -> list[bytes]:
    """The report files attached to a report mail (application/tlsrpt+gzip, +json, gzip,
    zip is not supported)."""

    msg = email.message_from_bytes(message, policy=email.policy.default)
    out = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("application/tlsrpt+gzip", "application/tlsrpt+json", "application/gzip",
                     "application/json", "application/x-gzip"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append(payload)
    return out


async def report_mailbox(store: Any, config: Any, address: str, folder: str
                         ) -> tuple[str, list[bytes]]:
    """(the address read, the messages in its folder): reports sent to us."""
    if not address:
        address = getattr(getattr(config, "dmarc", None), "report_address", "") or ""
    if not address:
        domains = await store.list_domains()
        address = f"postmaster@{domains[0]}" if domains else ""
    account = await store.get_account(address) if address else None
    if account is None:
        return address, []
    box = await store.get_mailbox(account.id, folder)
    if box is None:
        return address, []
    return address, [await store.read_blob(m.blob_id) for m in await store.list_messages(box.id)]


async def cmd_report_tls(args: argparse.Namespace, store: Any, config: Any = None) -> int:
    if getattr(args, "mailbox_scan", False) or getattr(args, "mailbox", ""):
        address, messages = await report_mailbox(store, config, args.mailbox, args.folder)
        found = 0
        for raw in messages:
            for blob in extract_report_attachments(raw):
                try:
                    print("\n".join(summarize_tlsrpt(parse_tlsrpt(blob))))
                    found += 1
                except (ValueError, OSError):
                    continue
        print(f"{found} TLS-RPT report(s) in {address or '(no mailbox)'} {args.folder}")
        return 0
    if args.files:
        for name in args.files:
            raw = Path(name).read_bytes()
            blobs = [raw] if raw[:1] in (b"{", b"\x1f") else extract_report_attachments(raw)
            if not blobs:
                print(f"{name}: no TLS-RPT report found")
                continue
            for blob in blobs:
                try:
                    print("\n".join(summarize_tlsrpt(parse_tlsrpt(blob))))
                except (ValueError, OSError) as exc:
                    print(f"{name}: not a TLS-RPT report: {exc}")
        return 0
    print("MTA-STS policies cached:")
    now = time.time()
    for pol in await store.list_sts_policies():
        state = "valid" if now < pol.expires else "expired"
        print(f"  {pol.domain}: mode={pol.mode} id={pol.policy_id} "
              f"mx={','.join(pol.mx) or '-'} fetched {_when(pol.fetched)} UTC, {state}")
    print("Outbound TLS results not yet reported (day, domain, policy, MX, result, count):")
    for r in await store.tls_results():
        print(f"  {r.day} {r.policy_domain} {r.policy_type} {r.mx_host} {r.result} {r.count}")
    return 0


# -- DMARC aggregate reports ---------------------------------------------------------------

REPORT_TYPES = ("application/gzip", "application/x-gzip", "application/zip",
                "application/x-zip-compressed", "text/xml", "application/xml")


def dmarc_attachments(message: bytes) -> list[bytes]:
    msg = email.message_from_bytes(message, policy=email.policy.default)
    out = []
    for part in msg.walk():
        if part.get_content_type() in REPORT_TYPES:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append(payload)
    return out


def summarize_dmarc_file(name: str, raw: bytes) -> list[str]:
    blobs = [raw] if raw[:2] in (b"\x1f\x8b", b"PK", b"<?", b"<f") else dmarc_attachments(raw)
    out: list[str] = []
    for blob in blobs:
        for xml in unpack(blob):
            try:
                out.extend(summarize(parse_aggregate(xml)))
            except (ValueError, SyntaxError) as exc:
                out.append(f"{name}: not a DMARC aggregate report: {exc}")
    return out or [f"{name}: no DMARC aggregate report found"]


async def cmd_report_dmarc(args: argparse.Namespace, store: Any, config: Any) -> int:
    if args.files:
        for name in args.files:
            print("\n".join(summarize_dmarc_file(name, Path(name).read_bytes())))
        return 0
    address, messages = await report_mailbox(store, config, args.mailbox, args.folder)
    found = 0
    for n, raw in enumerate(messages, 1):
        if not dmarc_attachments(raw):
            continue
        found += 1
        print("\n".join(summarize_dmarc_file(f"{address} message {n}", raw)))
    if not found:
        print(f"no DMARC reports in {address or '(no mailbox)'} {args.folder}; name files "
              "or --mailbox")
    rows = await store.dmarc_results()
    if rows:
        print("Inbound DMARC results not yet reported (day, From domain, source, "
              "disposition, dkim, spf, count):")
        for r in rows:
            print(f"  {r.day} {r.header_from} {r.source_ip} {r.disposition} dkim={r.dkim} "
                  f"spf={r.spf} {r.count}")
    return 0


def _with_store_and_config(fn: Any) -> Any:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                result: int = await fn(args, store, config)
                return result
            finally:
                await store.close()

        return asyncio.run(main())

    return run


def register(subparsers: Any) -> None:
    """``pochta report tls [FILE...]`` and ``pochta report dmarc [FILE...]``."""

    r = subparsers.add_parser("report", help="TLS-RPT and DMARC reports")
    rs = r.add_subparsers(dest="report_command", required=True)
    p = rs.add_parser("tls", help="cached MTA-STS policies and TLS results; or read "
                      "received TLS-RPT reports (JSON, .json.gz or the report mail)")
    p.add_argument("files", nargs="*", help="received reports to summarize")
    p.add_argument("--received", dest="mailbox_scan", action="store_true",
                   help="read the reports that arrived by mail (the rua mailbox)")
    p.add_argument("--mailbox", default="", help="account whose mail holds the reports "
                   "(default: [dmarc] report_address, else postmaster@ the first domain)")
    p.add_argument("--folder", default="INBOX")
    p.set_defaults(func=_with_store_and_config(cmd_report_tls))
    p = rs.add_parser("dmarc", help="received DMARC aggregate reports (files, or the "
                      "mailbox of the rua address) and inbound results not yet reported")
    p.add_argument("files", nargs="*", help="report files (.xml, .xml.gz, .zip, or mails)")
    p.add_argument("--mailbox", default="", help="account whose mail holds the reports "
                   "(default: [dmarc] report_address, else postmaster@ the first domain)")
    p.add_argument("--folder", default="INBOX")
    p.set_defaults(func=_with_store_and_config(cmd_report_dmarc))
