"""The TLSA record (RFC 7672 §3.1: DANE-EE, 3 1 1) for Pochta's own certificate, for
``pochta dns records``, and a warning when the certificate's key changed since the record
was last printed (a renewal with a new key breaks DANE for senders until the new record
is published: publish the new one beside the old first, or renew with the same key)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pochta.policy.records import DNSRecord
from pochta.queue.dane import spki_of

STATE_FILE = "dane-tlsa-published.txt"


def cert_path(config: Any) -> Path:
    p = Path(str(config.tls.cert))
    if not p.is_absolute():
        p = Path(str(getattr(config, "base_dir", "."))) / p
    return p


def own_tlsa(config: Any, port: int = 25, ttl: int = 3600, *, remember: bool = True,
             ) -> tuple[DNSRecord | None, str]:
    """(the record or None when there is no readable certificate, a warning or "").
    ``remember``: note this key as the published one (``pochta dns records``); the
    server only compares (and warns at start)."""

    try:
        certs = x509.load_pem_x509_certificates(cert_path(config).read_bytes())
    except (OSError, ValueError):
        return None, ""  # no certificate yet: nothing to publish
    der = certs[0].public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(spki_of(der)).hexdigest()
    host = str(config.hostname).rstrip(".").lower()
    record = DNSRecord(f"_{port}._tcp.{host}", "TLSA", f"3 1 1 {digest}", ttl,
                       "DANE (RFC 7672) for this MX: the certificate's public key "
                       "(renew with the same key, or publish the new record first)")
    warning = ""
    state = Path(str(config.data_path)) / STATE_FILE
    try:
        before = state.read_text().strip()
    except OSError:
        before = ""
    if before and before != digest:
        warning = (f"the certificate's key changed since the TLSA record 3 1 1 "
                   f"{before[:16]}... was last printed: publish the new record beside the old "
                   "one, and remove the old one once the new one is visible (TTL)")
    if not remember:
        return record, warning
    try:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(digest + "\n")
    except OSError:
        pass
    return record, warning
