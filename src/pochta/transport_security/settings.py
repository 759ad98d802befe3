"""``[transport_security]``: MTA-STS, DANE and TLS-RPT for outbound mail (issue 20)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class TransportSecurityConfig:
    mta_sts: bool = field(
        default=True,
        metadata=_doc("apply recipient domains' MTA-STS policies (RFC 8461) to MX delivery"),
    )
    ca_file: str = field(
        default="",
        metadata=_doc(
            "CA bundle (PEM) that MTA-STS policy hosts and MTA-STS MX certificates are "
            "checked against; empty: the system trust store"
        ),
    )
    mta_sts_port: int = field(
        default=443, metadata=_doc("HTTPS port of mta-sts.DOMAIN (tests change it)")
    )
    mta_sts_timeout: float = field(
        default=60.0, metadata=_doc("seconds to fetch one MTA-STS policy (RFC 8461 §3.3)")
    )
    mta_sts_txt_interval: float = field(
        default=300.0,
        metadata=_doc(
            "seconds between checks of a domain's _mta-sts TXT id while its cached policy "
            "is fresh (the policy is fetched again when the id changes or half its max_age "
            "has passed)"
        ),
    )
    dane: bool = field(
        default=False,
        metadata=_doc(
            "apply DANE TLSA records (RFC 7672) to MX delivery; needs dane_resolver"
        ),
    )
    dane_resolver: str = field(
        default="",
        metadata=_doc(
            "the local validating resolver whose AD bit is trusted for DANE, e.g. "
            '"127.0.0.1" or "127.0.0.1:5353" (unbound on loopback); never a remote one'
        ),
    )
    tls_rpt: bool = field(
        default=True,
        metadata=_doc(
            "record every outbound TLS session's result per recipient domain for TLS-RPT "
            "(RFC 8460) reports"
        ),
    )
    tls_rpt_send: bool = field(
        default=True,
        metadata=_doc(
            "send the daily TLS-RPT aggregate report to the rua (mailto:) of each domain "
            "that publishes _smtp._tls"
        ),
    )
    dmarc_reports: bool = field(
        default=True,
        metadata=_doc(
            "record inbound DMARC results of domains that publish rua= and send them the "
            "daily aggregate report (RFC 7489 §7.2)"
        ),
    )
    requiretls: bool = field(
        default=True,
        metadata=_doc(
            "offer REQUIRETLS (RFC 8689) on the mta and submission roles over TLS; such "
            "mail leaves only over MTA-STS- or DANE-validated TLS to peers that offer it "
            "too, and bounces (5.7.30) otherwise"
        ),
    )
    srs: bool = field(
        default=False,
        metadata=_doc(
            "rewrite the envelope sender of mail we forward (sender outside our domains) "
            "with SRS, so SPF passes at the next hop; bounces to SRS addresses go back"
        ),
    )
    srs_domain: str = field(
        default="",
        metadata=_doc(
            "domain of the SRS addresses (its MX must be this server); empty: hostname"
        ),
    )
    srs_secret_file: str = field(
        default="",
        metadata=_doc(
            "file with the SRS secret (relative to the config); empty: srs-secret in the "
            "data directory, made on first use. Keep it when moving servers"
        ),
    )
    srs_max_age_days: int = field(
        default=21, metadata=_doc("bounces to SRS addresses older than this are refused")
    )
    arc_verify: bool = field(
        default=True,
        metadata=_doc("verify ARC chains (RFC 8617) of inbound mail; arc= in "
                      "Authentication-Results"),
    )
    arc_trusted_sealers: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "domains (ARC-Seal d=) whose passing chain overrides a DMARC fail when that "
            "sealer saw dmarc=pass (a mailing list or forwarder you trust)"
        ),
    )
    arc_seal: bool = field(
        default=False,
        metadata=_doc(
            "ARC-seal mail we forward (sender outside our domains) with the RSA DKIM key "
            "of arc_domain"
        ),
    )
    arc_domain: str = field(
        default="",
        metadata=_doc("sealing domain (needs a DKIM RSA key, `pochta dkim`); empty: the "
                      "SRS domain, else the host name"),
    )
    report_from: str = field(
        default="",
        metadata=_doc(
            "sender address of the reports Pochta sends; empty: noreply-reports@hostname"
        ),
    )
    organization: str = field(
        default="", metadata=_doc("organization-name in reports; empty: the host name")
    )


def check(cfg: TransportSecurityConfig) -> list[str]:
    problems = []
    if not 1 <= cfg.mta_sts_port <= 65535:
        problems.append("transport_security.mta_sts_port: must be from 1 to 65535")
    for name in ("mta_sts_timeout", "mta_sts_txt_interval"):
        if getattr(cfg, name) <= 0:
            problems.append(f"transport_security.{name}: must be positive")
    if cfg.dane and not cfg.dane_resolver:
        problems.append("transport_security.dane_resolver: dane needs a local validating "
                        "resolver (e.g. unbound on 127.0.0.1)")
    if cfg.dane_resolver:
        host = cfg.dane_resolver
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            problems.append("transport_security.dane_resolver: must be an IP address "
                            "(with an optional :port)")
        else:
            if not addr.is_loopback:
                problems.append("transport_security.dane_resolver: must be a loopback "
                                "address (the AD bit is trusted only from a local resolver)")
    return problems
