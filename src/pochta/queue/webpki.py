"""Checks of a TLS peer's certificate chain after a handshake made without verification:
the chain itself (from the SSL object) and a Web PKI check against the system trust store
or a CA file, for MTA-STS ``testing`` mode, where failures are reported, never enforced
(RFC 8461 §5)."""

from __future__ import annotations

import datetime
import functools
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509 import verification as v

_ENCODING_DER = 2  # _ssl.ENCODING_DER (ssl.Certificate.public_bytes in 3.13)


def peer_chain(ssl_object: object) -> list[bytes]:
    """The certificates the peer sent, DER, leaf first. Python 3.13 has
    ``SSLObject.get_unverified_chain()``; 3.10-3.12 have it on the private ``_sslobj``."""
    for obj in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        get = getattr(obj, "get_unverified_chain", None)
        if get is None:
            continue
        out = []
        for cert in get() or []:
            if isinstance(cert, bytes):
                out.append(cert)
            else:
                out.append(cert.public_bytes(_ENCODING_DER))
        return out
    if isinstance(ssl_object, ssl.SSLObject):
        leaf = ssl_object.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return []


@functools.lru_cache(maxsize=8)
def _anchors(cafile: str | None) -> tuple[object, ...]:
    path = cafile or ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths(
    ).openssl_cafile
    try:
        with open(path, "rb") as f:
            return tuple(x509.load_pem_x509_certificates(f.read()))
    except (OSError, ValueError):
        return ()


def webpki_check(chain: Sequence[bytes], host: str, cafile: str | None = None,
                 now: datetime.datetime | None = None) -> str:
    """"success" or the RFC 8460 §4.3 result-type of why the chain is not valid for
    ``host``."""

    if not chain:
        return "validation-failure"
    anchors = [a for a in _anchors(cafile) if isinstance(a, x509.Certificate)]
    if not anchors:
        return "certificate-not-trusted"
    leaf = x509.load_der_x509_certificate(chain[0])
    moment = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < moment:
        return "certificate-expired"
    try:
        (v.PolicyBuilder().store(v.Store(anchors)).time(moment)
         .build_server_verifier(x509.DNSName(host))
         .verify(leaf, [x509.load_der_x509_certificate(c) for c in chain[1:]]))
    except v.VerificationError as exc:
        text = str(exc).lower()
        if "name" in text or "san" in text:
            return "certificate-host-mismatch"
        return "certificate-not-trusted"
    except ValueError:
        return "certificate-host-mismatch"
    return "success"


def classify_ssl_error(exc: BaseException) -> str:
    """The TLS-RPT result-type of a failed verifying handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = (exc.verify_message or "").lower()
        if "hostname" in msg or "ip address mismatch" in msg:
            return "certificate-host-mismatch"
        if "expired" in msg:
            return "certificate-expired"
        return "certificate-not-trusted"
    return "validation-failure"
