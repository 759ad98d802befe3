"""Admin views of transport security: lines for ``pochta queue show`` and the
``pochta report tls`` command (cached MTA-STS policies, recorded TLS results, received
TLS-RPT reports)."""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pochta.storage.interfaces_transport import TransportSecurityStore


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")


async def queue_show_lines(store: TransportSecurityStore, recipients: Sequence[str],
                           now: float | None = None) -> list[str]:
    """What transport security says about the recipients' domains (for queue show)."""
    now = time.time() if now is None else now
    out = []
    for domain in sorted({r.rpartition("@")[2].lower() for r in recipients}):
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
    import email
    import email.policy

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


async def cmd_report_tls(args: argparse.Namespace, store: TransportSecurityStore) -> int:
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


def register(subparsers: Any) -> None:
    """``pochta report tls [FILE...]``."""
    from pochta.queue.cli import _with_store

    r = subparsers.add_parser("report", help="TLS-RPT and DMARC reports")
    rs = r.add_subparsers(dest="report_command", required=True)
    p = rs.add_parser("tls", help="cached MTA-STS policies and TLS results; or read "
                      "received TLS-RPT reports (JSON, .json.gz or the report mail)")
    p.add_argument("files", nargs="*", help="received reports to summarize")
    p.set_defaults(func=_with_store(cmd_report_tls))
