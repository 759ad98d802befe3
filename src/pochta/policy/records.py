"""The DNS records an administrator publishes for a mail domain, as zone lines or JSON.

MX, SPF (``v=spf1 mx -all``), one DKIM key record per selector, a DMARC starter policy
(``p=quarantine`` with rua), MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) records, and the
RFC 6186 SRV records that let mail clients find the submission/IMAP/POP3 services.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pochta.mail.addresses import domain_key
from pochta.policy.dkim import DKIMKey, dns_txt_record

# RFC 6186 / RFC 8314 service names and their usual implicit-TLS or STARTTLS ports
DEFAULT_SERVICES: Mapping[str, int] = {
    "submissions": 465,
    "submission": 587,
    "imaps": 993,
    "pop3s": 995,
}


@dataclass(frozen=True, slots=True)
class DNSRecord:
    name: str  # fully qualified, without the trailing dot
    type: str  # MX, TXT, SRV, CNAME, A, AAAA
    value: str  # presentation value; TXT values unquoted (rendering splits and quotes)
    ttl: int = 3600
    note: str = ""


def records_for(
    domain: str,
    hostname: str,
    keys: Sequence[DKIMKey],
    *,
    rua: str = "",
    services: Mapping[str, int] = DEFAULT_SERVICES,
    ttl: int = 3600,
) -> list[DNSRecord]:
    d = domain_key(domain)
    host = hostname.rstrip(".").lower()
    report_to = rua or f"postmaster@{d}"
    out = [
        DNSRecord(d, "MX", f"10 {host}.", ttl, "mail for the domain goes to this server"),
        DNSRecord(d, "TXT", "v=spf1 mx -all", ttl,
                  "SPF (RFC 7208): only the domain's MX hosts send its mail"),
    ]
    for key in sorted(keys, key=lambda k: (k.selector, k.algorithm)):
        if key.domain != d:
            continue
        out.append(DNSRecord(key.dns_name, "TXT", dns_txt_record(key), ttl,
                             f"DKIM {key.algorithm} key, selector {key.selector}"))
    out.append(DNSRecord(
        f"_dmarc.{d}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:{report_to}", ttl,
        "DMARC (RFC 7489) starter policy; move to p=reject once reports look clean",
    ))
    # MTA-STS: the id changes whenever the policy (here: the MX host) changes
    sts_id = hashlib.sha256(f"mx:{host}".encode()).hexdigest()[:16]
    out.append(DNSRecord(
        f"_mta-sts.{d}", "TXT", f"v=STSv1; id={sts_id}", ttl,
        f"MTA-STS (RFC 8461); also serve https://mta-sts.{d}/.well-known/mta-sts.txt "
        f"with 'version: STSv1', 'mode: testing', 'mx: {host}', 'max_age: 604800'",
    ))
    out.append(DNSRecord(f"mta-sts.{d}", "CNAME", f"{host}.", ttl,
                         "the web host that serves the MTA-STS policy over HTTPS"))
    out.append(DNSRecord(f"autoconfig.{d}", "CNAME", f"{host}.", ttl,
                         "the web host that serves Thunderbird's autoconfig file"))
    out.append(DNSRecord(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:{report_to}",
                         ttl, "SMTP TLS reporting (RFC 8460)"))
    for service, port in services.items():
        out.append(DNSRecord(f"_{service}._tcp.{d}", "SRV", f"0 1 {port} {host}.", ttl,
                             "client autoconfiguration (RFC 6186)"))
    # RFC 6186 §4: services not offered are published with target "."
    for service in ("imap", "pop3"):
        if service not in services:
            out.append(DNSRecord(f"_{service}._tcp.{d}", "SRV", "0 0 0 .", ttl,
                                 "not offered without TLS (RFC 8314)"))
    return out


def _txt_strings(value: str) -> str:
    """A TXT value as quoted character-strings of at most 255 bytes (RFC 1035 §3.3.14)."""
    raw = value.encode("utf-8")
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    quoted = []
    for c in chunks:
        text = c.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{text}"')
    if len(quoted) == 1:
        return quoted[0]
    return "( " + "\n\t".join(quoted) + " )"


def zone_lines(records: Sequence[DNSRecord]) -> str:
    """BIND zone-file lines with fully qualified names, a comment before each record."""
    lines = []
    for r in records:
        if r.note:
            lines.append(f"; {r.note}")
        value = _txt_strings(r.value) if r.type == "TXT" else r.value
        lines.append(f"{r.name}.\t{r.ttl}\tIN\t{r.type}\t{value}")
    return "\n".join(lines) + "\n"


def to_json(records: Sequence[DNSRecord]) -> str:
    return json.dumps([asdict(r) for r in records], indent=2) + "\n"


def services_from_listeners(listeners: Sequence[Any]) -> Mapping[str, int]:
    """RFC 6186 services for the configured listeners (defaults when none are given)."""
    if not listeners:
        return DEFAULT_SERVICES
    names = {
        ("submission", "implicit"): "submissions", ("submission", "starttls"): "submission",
        ("imap", "implicit"): "imaps", ("imap", "starttls"): "imap",
        ("pop3", "implicit"): "pop3s", ("pop3", "starttls"): "pop3",
    }
    out: dict[str, int] = {}
    for lst in listeners:
        name = names.get((lst.role, lst.tls))
        if name and name not in out:
            out[name] = lst.port
    return out
