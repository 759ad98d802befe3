"""``[web]``: metrics access, MTA-STS policy serving, web admin sessions (docs/web.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

MTA_STS_MODES = ("off", "none", "testing", "enforce")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class WebSettings:
    metrics_token: str = field(
        default="",
        metadata=_doc("bearer token for /metrics; empty: /metrics answers loopback clients "
                      "only (403 to others)"))
    mta_sts_mode: str = field(
        default="testing",
        metadata=_doc("MTA-STS policy mode served at /.well-known/mta-sts.txt for "
                      'mta-sts.DOMAIN: "testing", "enforce", "none", or "off" (not served)'))
    mta_sts_domains: list[str] = field(
        default_factory=list,
        metadata=_doc("local domains whose MTA-STS policy is served; empty: every local "
                      "domain"))
    mta_sts_max_age: int = field(
        default=604800, metadata=_doc("max_age of the MTA-STS policy, seconds"))
    session_seconds: int = field(
        default=28800, metadata=_doc("web admin / self-service session lifetime, seconds"))
    secure_cookies: bool = field(
        default=True,
        metadata=_doc("mark session cookies Secure (the pages are then usable over HTTPS "
                      "only; turn off only for a plain-HTTP test listener)"))
    log_days: int = field(
        default=30,
        metadata=_doc("days the mail log of the web admin (sessions, deliveries, bounces) "
                      "is kept; 0: forever"))


def check(settings: WebSettings) -> list[str]:
    problems = []
    if settings.mta_sts_mode not in MTA_STS_MODES:
        problems.append(f"web.mta_sts_mode: one of {', '.join(MTA_STS_MODES)}")
    if settings.mta_sts_max_age <= 0 or settings.mta_sts_max_age > 31557600:
        problems.append("web.mta_sts_max_age: 1 to 31557600 seconds (RFC 8461 3.2)")
    if settings.session_seconds <= 0:
        problems.append("web.session_seconds: must be positive")
    if settings.log_days < 0:
        problems.append("web.log_days: 0 (forever) or more")
    return problems


@dataclass(frozen=True)
class AcmeSettings:
    directory_url: str = field(
        default="",
        metadata=_doc("ACME directory (RFC 8555), e.g. "
                      '"https://acme-v02.api.letsencrypt.org/directory"; empty: ACME off, '
                      "the [tls] files are used as they are"))
    email: str = field(default="", metadata=_doc("contact address for the ACME account"))
    names: list[str] = field(
        default_factory=list,
        metadata=_doc("names of the certificate; empty: hostname, plus mta-sts.DOMAIN and "
                      "autoconfig.DOMAIN of every local domain"))
    renew_days: int = field(
        default=30, metadata=_doc("renew when the certificate expires within this many days"))
    check_interval: float = field(
        default=43200.0, metadata=_doc("seconds between expiry checks"))
    ca_bundle: str = field(
        default="",
        metadata=_doc("CA file that verifies the ACME server's HTTPS (a test server such as "
                      "pebble); empty: the system's"))


def check_acme(settings: AcmeSettings) -> list[str]:
    problems = []
    if settings.directory_url and not settings.directory_url.startswith("https://"):
        problems.append("acme.directory_url: must start with https://")
    if settings.renew_days <= 0:
        problems.append("acme.renew_days: must be positive")
    if settings.check_interval <= 0:
        problems.append("acme.check_interval: must be positive")
    return problems
