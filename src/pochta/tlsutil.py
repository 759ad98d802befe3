"""TLS: self-signed certificates for `pochta init`, and the server's SSL context."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a TLS session negotiated, for Received: headers and logs."""

    version: str
    cipher: str
    bits: int


def generate_self_signed(hostname: str, cert_path: Path, key_path: Path, days: int = 825) -> None:
    """An ECDSA P-256 certificate for ``hostname`` (and localhost/127.0.0.1, for tests)."""

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(cert_path: Path, key_path: Path, min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """A server context with modern defaults (Mozilla 'intermediate': TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.load_cert_chain(cert_path, key_path)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS")
    keylog = env_keylog()
    if keylog:
        ctx.keylog_filename = keylog
    return ctx


def private_keylog(path: str) -> str:
    """Make ``path`` ready for TLS secrets: created 0600 if missing, tightened to 0600 if
    not. OpenSSL appends to it with the process umask (often 0644), and anyone who can
    read it can decrypt every recorded session. Returns ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def env_keylog() -> str | None:
    """``$SSLKEYLOGFILE``, made private, or None. Python's default client contexts (the
    outbound queue's) honour the variable by themselves, so it is checked at start."""
    path = os.environ.get("SSLKEYLOGFILE")
    return private_keylog(path) if path else None
