"""The one TLS client context factory: outbound SMTP, the diagnostics, MTA-STS policy
fetches, TLS-RPT and webhook posts, IMAP import."""

from __future__ import annotations

import ssl

DEFAULT_MIN_VERSION = ssl.TLSVersion.TLSv1_2  # RFC 8996 deprecates TLS 1.0 and 1.1


def client_context(
    verify: bool = True,
    cafile: str | None = None,
    min_version: ssl.TLSVersion | None = DEFAULT_MIN_VERSION,
) -> ssl.SSLContext:
    """A client context. ``verify`` checks the certificate chain (against the system
    store or ``cafile``) and the host name. Without it any certificate is taken: that
    is opportunistic TLS (RFC 7435), encryption against passive eavesdropping, for SMTP
    between servers where a bad certificate must not block delivery, and for
    diagnostics that report the certificate instead of refusing it. ``min_version``
    None leaves the library's default (a diagnostic that probes old servers)."""
    if verify:
        ctx = ssl.create_default_context(cafile=cafile or None)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version is not None:
        ctx.minimum_version = min_version
    return ctx
