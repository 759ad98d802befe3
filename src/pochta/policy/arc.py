"""ARC (RFC 8617): sealing mail we forward, verifying the chains of inbound mail.

* ``verify`` checks an inbound message's ARC chain (dkimpy), with the sealers' keys
  fetched through Pochta's resolver first (dkimpy itself is given a table, never the
  network): ``pass``, ``fail`` or ``none``, the d= of the latest seal and what that
  sealer's ARC-Authentication-Results said.
* ``trusted_override``: a DMARC fail is overridden when the chain passes, the latest
  sealer is one the admin trusts (``[transport_security] arc_trusted_sealers``) and it
  recorded ``dmarc=pass`` when the message reached it (RFC 7489 §10.5, RFC 8617 §7.2).
* ``seal`` adds ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results (from our
  own Authentication-Results, whose ``arc=`` result gives the chain's cv) with the RSA
  DKIM key of the sealing domain (dkimpy's ARC signs rsa-sha256 only).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dkim as dkimpy

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.headers import field_value, header_fields, split_header
from pochta.policy.dkim import DKIMKey

log = logging.getLogger("pochta.arc")

_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


@dataclass(frozen=True, slots=True)
class ARCResult:
    cv: str  # pass | fail | none
    sealer: str = ""  # d= of the highest-instance ARC-Seal
    instances: int = 0
    sealer_aar: str = ""  # that instance's ARC-Authentication-Results value
    reason: str = ""


def _headers(message: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of each header field, in order."""
    return [(name.lower(), field_value(raw))
            for name, raw in header_fields(split_header(message)[0]) if name]


def _tags(value: bytes) -> dict[bytes, bytes]:
    return {m.group(1): re.sub(rb"\s+", b"", m.group(2)) for m in _TAG.finditer(value)}


async def verify(message: bytes, resolver: Resolver) -> ARCResult:
    headers = _headers(message)
    seals = [(_tags(v), v) for n, v in headers if n == b"arc-seal"]
    if not seals:
        return ARCResult("none")
    names: set[str] = set()
    for n, v in headers:
        if n in (b"arc-seal", b"arc-message-signature"):
            t = _tags(v)
            if b"s" in t and b"d" in t:
                names.add(f"{t[b's'].decode('ascii', 'replace')}._domainkey."
                          f"{t[b'd'].decode('ascii', 'replace')}".lower())
    table: dict[str, str | None] = {}

    async def fetch(name: str) -> None:
        try:
            recs = await resolver.txt(name)
        except TemporaryDNSError:
            table[name] = None
            return
        table[name] = next((r for r in recs if "p=" in r), recs[0] if recs else None)

    await asyncio.gather(*(fetch(n) for n in names))

    def dnsfunc(qname: bytes | str, timeout: float = 5) -> bytes | None:
        q = qname.decode("ascii", "replace") if isinstance(qname, bytes) else qname
        rec = table.get(q.rstrip(".").lower())
        return rec.encode("utf-8") if rec else None

    def run() -> tuple[bytes, str]:
        try:
            cv, _results, comment = dkimpy.arc_verify(message, dnsfunc=dnsfunc)
        except Exception as exc:  # dkimpy on hostile input: a failed chain, not a crash
            return b"fail", f"cannot verify: {type(exc).__name__}"
        return cv, str(comment)

    cv, comment = await asyncio.to_thread(run)
    top = max(seals, key=lambda s: int(s[0].get(b"i", b"0") or 0) if s[0].get(b"i", b"0")
              .isdigit() else 0)
    instance = top[0].get(b"i", b"0").decode("ascii", "replace")
    aar = next((v for n, v in headers if n == b"arc-authentication-results"
                and v.split(b";", 1)[0].replace(b" ", b"") == b"i=" + instance.encode()), b"")
    return ARCResult(cv.decode("ascii", "replace").lower(),
                     top[0].get(b"d", b"").decode("ascii", "replace").lower(),
                     len(seals), aar.decode("utf-8", "replace"), comment)


def trusted_override(arc: ARCResult, trusted: Sequence[str]) -> bool:
    """Whether a DMARC fail may be overridden by this chain (see the module doc)."""
    if arc.cv != "pass" or not arc.sealer:
        return False
    wanted = {t.lower().rstrip(".") for t in trusted}
    if arc.sealer not in wanted:
        return False
    return re.search(r"(^|[;\s])dmarc\s*=\s*pass\b", arc.sealer_aar, re.IGNORECASE) is not None


def resinfo(arc: ARCResult) -> str:
    """The ``arc=`` result for our Authentication-Results (RFC 8617 §10.1)."""
    if arc.cv == "none":
        return "arc=none"
    return f"arc={arc.cv} (i={arc.instances} d={arc.sealer})"


async def seal(message: bytes, key: DKIMKey, authserv_id: str) -> bytes:
    """The message with an ARC set in front; unchanged when it cannot be sealed (no
    Authentication-Results of ours, a broken chain that must not be extended, ...)."""
    if key.algorithm != "rsa":
        return message

    def run() -> list[bytes]:
        try:
            return list(dkimpy.arc_sign(
                message, key.selector.encode(), key.domain.encode(), key.path.read_bytes(),
                authserv_id.encode(),
                include_headers=[b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                                 b"reply-to", b"mime-version", b"content-type",
                                 b"content-transfer-encoding"]))
        except Exception as exc:
            log.info("ARC: not sealed: %s", exc)
            return []

    headers = await asyncio.to_thread(run)
    return b"".join(headers) + message if headers else message
