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


def check(settings: WebSettings) -> list[str]:
    problems = []
    if settings.mta_sts_mode not in MTA_STS_MODES:
        problems.append(f"web.mta_sts_mode: one of {', '.join(MTA_STS_MODES)}")
    if settings.mta_sts_max_age <= 0 or settings.mta_sts_max_age > 31557600:
        problems.append("web.mta_sts_max_age: 1 to 31557600 seconds (RFC 8461 3.2)")
    if settings.session_seconds <= 0:
        problems.append("web.session_seconds: must be positive")
    return problems
