"""Storage contract for transport security (issue 20): the MTA-STS policy cache, the
outbound TLS results that TLS-RPT reports (RFC 8460) are built from, and the inbound DMARC
results that DMARC aggregate reports (RFC 7489 §7.2) are built from.

Every backend implements ``TransportSecurityStore`` (it is one of ``MailStore``'s bases);
``tests/storage/test_transport_store.py`` holds the conformance tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CachedSTSPolicy:
    """One recipient domain's MTA-STS policy as last fetched (RFC 8461 §5).

    ``fetched`` is when it was fetched (epoch seconds); it is valid until
    ``fetched + max_age``. ``text`` is the policy file as served (for TLS-RPT's
    policy-string)."""

    domain: str
    policy_id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    fetched: float
    text: str = ""

    @property
    def expires(self) -> float:
        return self.fetched + self.max_age


@dataclass(frozen=True, slots=True)
class TLSResultRow:
    """Outbound TLS sessions of one UTC day, summed per policy domain, policy, MX host
    and result (``result`` is "success" or an RFC 8460 §4.3 result-type)."""

    day: str  # YYYY-MM-DD (UTC)
    policy_domain: str
    policy_type: str  # sts | tlsa | no-policy-found
    policy_string: tuple[str, ...]
    mx_host: str
    result: str
    receiving_ip: str
    count: int


@dataclass(frozen=True, slots=True)
class DMARCResultRow:
    """Inbound messages of one UTC day, summed per header From domain, source IP and
    outcome (the <record> of an RFC 7489 appendix C aggregate report)."""

    day: str
    header_from: str
    source_ip: str
    disposition: str  # none | quarantine | reject
    dkim: str  # pass | fail (DMARC-aligned DKIM)
    spf: str  # pass | fail (DMARC-aligned SPF)
    policy: str  # the published p= (none | quarantine | reject), "" if none
    count: int
    envelope_from: str = ""  # the MAIL FROM domain
    spf_auth: str = ""  # raw SPF result: "domain:result"
    dkim_auth: str = ""  # raw DKIM results: "d1:result,d2:result"


class TransportSecurityStore(Protocol):
    # -- MTA-STS policy cache (RFC 8461 §5.1) ------------------------------------------

    async def get_sts_policy(self, domain: str) -> CachedSTSPolicy | None:
        """The cached policy of ``domain`` (lower case), expired or not."""

    async def put_sts_policy(self, policy: CachedSTSPolicy) -> None:
        """Insert or replace the cached policy of ``policy.domain``."""

    async def delete_sts_policy(self, domain: str) -> bool: ...

    async def list_sts_policies(self) -> list[CachedSTSPolicy]:
        """Every cached policy, by domain."""

    # -- TLS-RPT (RFC 8460 §4) ---------------------------------------------------------

    async def record_tls_result(
        self, day: str, policy_domain: str, policy_type: str,
        policy_string: Sequence[str], mx_host: str, result: str,
        receiving_ip: str = "", count: int = 1,
    ) -> None:
        """Add ``count`` sessions to the row with these keys (created at 0)."""

    async def tls_results(
        self, day: str | None = None, policy_domain: str | None = None
    ) -> list[TLSResultRow]:
        """Rows of one day and/or one domain (all when None), ordered by day, domain,
        MX host, result."""

    async def delete_tls_results(self, day: str, policy_domain: str | None = None) -> int:
        """Forget the rows of ``day`` (and one domain): once its report has gone out."""

    # -- DMARC aggregate reports (RFC 7489 §7.2) ---------------------------------------

    async def record_dmarc_result(
        self, day: str, header_from: str, source_ip: str, disposition: str,
        dkim: str, spf: str, policy: str, count: int = 1, *,
        envelope_from: str = "", spf_auth: str = "", dkim_auth: str = "",
    ) -> None: ...

    async def dmarc_results(
        self, day: str | None = None, header_from: str | None = None
    ) -> list[DMARCResultRow]: ...

    async def delete_dmarc_results(self, day: str, header_from: str | None = None) -> int: ...
