"""DANE for SMTP (RFC 7672): TLSA records of MX hosts, DNSSEC-validated, and the check
of a peer's certificate chain against them.

Validation is left to a validating resolver that we trust (Postfix's model): queries go
to the configured resolver (``[transport_security] dane_resolver``, loopback) with the DO
and AD bits set, and an answer counts as secure only when that resolver sets AD in its
reply. A SERVFAIL (a bogus signature, a broken chain) is a lookup failure: delivery to
that host is deferred, never downgraded.

Usable records (RFC 7672 §3.1): DANE-TA(2) and DANE-EE(3), selectors 0/1, matching types
0/1/2. PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP; a host whose records are all unusable
is treated as having no TLSA records but TLS is still mandatory (§2.2).

* DANE-EE: the leaf certificate (or its public key) must match; names and dates are not
  checked (§3.1.1).
* DANE-TA: some certificate of the chain the server sent must match, and the leaf must
  chain to it and carry the MX host name (or the recipient domain) (§3.1.2, §3.2.2).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification as v

from pochta.dns import TemporaryDNSError

log = logging.getLogger("pochta.dane")


@dataclass(frozen=True, slots=True)
class TLSARecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> TLSARecord:
        """Presentation form: "3 1 1 0a1b..." (hex may be split by spaces)."""
        parts = text.split()
        if len(parts) < 4:
            raise ValueError(f"not a TLSA record: {text!r}")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]),
                   bytes.fromhex("".join(parts[3:])))

    @property
    def usable(self) -> bool:
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def matches(self, cert_der: bytes) -> bool:
        content = spki_of(cert_der) if self.selector == 1 else cert_der
        if self.mtype == 1:
            return hashlib.sha256(content).digest() == self.data
        if self.mtype == 2:
            return hashlib.sha512(content).digest() == self.data
        return content == self.data


def spki_of(cert_der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(cert_der)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tlsa_for_certificate(cert_der: bytes) -> TLSARecord:
    """The DANE-EE 3 1 1 record of a certificate (its public key's SHA-256)."""
    return TLSARecord(3, 1, 1, hashlib.sha256(spki_of(cert_der)).digest())


class DANEMismatch(Exception):
    """The peer's certificate does not match its TLSA records; ``result`` is the TLS-RPT
    result-type."""

    def __init__(self, message: str, result: str = "validation-failure") -> None:
        super().__init__(message)
        self.result = result


def check_chain(
    records: Sequence[TLSARecord], chain: Sequence[bytes], names: Sequence[str],
    now: datetime.datetime | None = None,
) -> str:
    """Returns which record matched ("3 1 1 ..."); raises ``DANEMismatch``.
    ``chain``: DER certificates as the server sent them, leaf first."""
    if not chain:
        raise DANEMismatch("the server sent no certificate")
    usable = [r for r in records if r.usable]
    for rec in usable:
        if rec.usage == 3 and rec.matches(chain[0]):
            return f"DANE-EE {rec}"
    for rec in usable:
        if rec.usage != 2:
            continue
        for i, cert in enumerate(chain):
            if rec.matches(cert):
                _verify_to_anchor(chain[0], list(chain[1:i]), cert, names, now)
                return f"DANE-TA {rec}"
    raise DANEMismatch(
        "no TLSA record matches the certificate chain (" +
        ", ".join(str(r)[:24] + "..." for r in usable) + ")")


def _verify_to_anchor(
    leaf_der: bytes, intermediates_der: list[bytes], anchor_der: bytes,
    names: Sequence[str], now: datetime.datetime | None,
) -> None:
    leaf = x509.load_der_x509_certificate(leaf_der)
    anchor = x509.load_der_x509_certificate(anchor_der)
    if leaf_der == anchor_der:
        # the trust anchor is the leaf itself (a self-issued TA): names still matter
        _check_names(leaf, names)
        return
    inter = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    moment = now or datetime.datetime.now(datetime.UTC)
    errors = []
    for name in names:
        try:
            verifier = (v.PolicyBuilder().store(v.Store([anchor])).time(moment)
                        .build_server_verifier(x509.DNSName(name)))
            verifier.verify(leaf, inter)
            return
        except (v.VerificationError, ValueError) as exc:
            errors.append(f"{name}: {exc}")
    result = ("certificate-host-mismatch" if all("name" in e.lower() or "san" in e.lower()
                                                  for e in errors) else "validation-failure")
    raise DANEMismatch("DANE-TA: the certificate does not chain to the trust anchor for "
                       + "; ".join(errors), result)


def _check_names(cert: object, names: Sequence[str]) -> None:
    assert isinstance(cert, x509.Certificate)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns_names = []
    for name in names:
        n = name.lower()
        for pat in dns_names:
            if pat == n or (pat.startswith("*.") and n.partition(".")[2] == pat[2:]):
                return
    raise DANEMismatch(f"certificate names {dns_names} do not include {', '.join(names)}",
                       "certificate-host-mismatch")


# -- DNSSEC lookups ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecureAnswer:
    records: tuple[str, ...]
    secure: bool  # the validating resolver set AD


class DNSSECResolver(Protocol):
    async def lookup(self, name: str, rdtype: str) -> SecureAnswer:
        """Raises ``TemporaryDNSError`` on SERVFAIL (bogus) or timeout."""


class ValidatingResolver:
    """Asks one trusted validating resolver (e.g. unbound on 127.0.0.1) and believes its
    AD bit. ``server`` is "127.0.0.1" or "127.0.0.1:5353" or "[::1]:53"."""

    def __init__(self, server: str, timeout: float = 10.0) -> None:
        host, port = server, 53
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif server.count(":") == 1:
            host, _, p = server.partition(":")
            port = int(p)
        self.host = host
        self.port = port
        self.timeout = timeout

    async def lookup(self, name: str, rdtype: str) -> SecureAnswer:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD | dns.flags.RD
        try:
            resp, _ = await dns.asyncquery.udp_with_fallback(
                query, self.host, timeout=self.timeout, port=self.port)
        except (dns.exception.DNSException, OSError) as exc:
            raise TemporaryDNSError(f"{rdtype} {name}: {exc or 'timeout'}") from exc
        rcode = resp.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise TemporaryDNSError(f"{rdtype} {name}: {dns.rcode.to_text(rcode)}")
        want = dns.rdatatype.from_text(rdtype)
        records = tuple(r.to_text() for rrset in resp.answer if rrset.rdtype == want
                        for r in rrset)
        return SecureAnswer(records, bool(resp.flags & dns.flags.AD))


@dataclass
class StaticDNSSECResolver:
    """A test double: answers from a table, ``secure`` names get AD, ``bogus`` names
    SERVFAIL (what a validating resolver answers for a bad signature)."""

    records: dict[tuple[str, str], list[str]]
    secure: set[str]
    bogus: set[str]

    async def lookup(self, name: str, rdtype: str) -> SecureAnswer:
        key = name.lower().rstrip(".")
        if key in self.bogus:
            raise TemporaryDNSError(f"{rdtype} {key}: SERVFAIL (bogus)")
        return SecureAnswer(tuple(self.records.get((key, rdtype), [])), key in self.secure)


@dataclass(frozen=True, slots=True)
class HostTLSA:
    """What DANE says about one MX host: its usable records, or why it cannot be used."""

    records: tuple[TLSARecord, ...] = ()
    failure: str = ""  # non-empty: do not deliver to this host now (lookup failed)


class DANE:
    def __init__(self, resolver: DNSSECResolver, port: int = 25) -> None:
        self.resolver = resolver
        self.port = port

    async def mx_secure(self, domain: str) -> bool:
        """RFC 7672 §2.2.1: DANE applies to MX hosts only when the MX RRset is secure."""
        try:
            return (await self.resolver.lookup(domain, "MX")).secure
        except TemporaryDNSError:
            return False  # the normal resolver decides whether the domain is routable

    async def host(self, host: str) -> HostTLSA | None:
        """None: no (secure) TLSA records, DANE does not apply to this host. RFC 7672
        §2.2.2: only a host whose address records are secure is looked up."""
        try:
            addresses = await self.resolver.lookup(host, "A")
        except TemporaryDNSError as exc:
            return HostTLSA(failure=f"address lookup of {host} failed: {exc}")
        if not addresses.secure:
            return None
        name = f"_{self.port}._tcp.{host}"
        try:
            answer = await self.resolver.lookup(name, "TLSA")
        except TemporaryDNSError as exc:
            return HostTLSA(failure=f"TLSA lookup of {name} failed: {exc}")
        if not answer.secure or not answer.records:
            return None
        parsed = []
        for text in answer.records:
            try:
                parsed.append(TLSARecord.parse(text))
            except ValueError:
                continue
        return HostTLSA(tuple(parsed))
