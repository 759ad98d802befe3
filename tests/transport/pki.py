"""Test PKI and servers for transport-security tests: a private CA with leaf certificates,
an HTTPS server for MTA-STS policies, and a proxy that strips STARTTLS from EHLO."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pochta.tlsutil import server_context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CA:
    dir: Path
    name: str = "Pochta Test CA"
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(self.name)).issuer_name(_name(self.name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cafile.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def cafile(self) -> Path:
        return self.dir / f"{self.name.replace(' ', '-')}.pem"

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def issue(self, *names: str, expired: bool = False) -> tuple[Path, Path]:
        """(chain file: leaf then CA, key file) for ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=90)
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        stem = self.dir / f"{names[0]}{'-expired' if expired else ''}"
        chain = stem.with_suffix(".chain.pem")
        keyfile = stem.with_suffix(".key.pem")
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                          + self.cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return chain, keyfile

    def context(self, *names: str, expired: bool = False) -> ssl.SSLContext:
        chain, keyfile = self.issue(*names, expired=expired)
        return server_context(chain, keyfile)


@dataclass
class PolicyServer:
    """HTTPS on 127.0.0.1 serving /.well-known/mta-sts.txt (any Host)."""

    context: ssl.SSLContext
    body: str = ""
    status: str = "200 OK"
    content_type: str = "text/plain"
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                  ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            ok = request.startswith(b"GET /.well-known/mta-sts.txt ")
            status = self.status if ok else "404 Not Found"
            body = self.body.encode() if ok else b"not here\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {self.content_type}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@dataclass
class StripTLSProxy:
    """A man in the middle that removes STARTTLS from the peer's EHLO reply (the downgrade
    attack MTA-STS and DANE exist to stop)."""

    target_port: int
    port: int = 0
    stripped: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while line := await creader.readline():
                swriter.write(line)
                await swriter.drain()
            swriter.close()

        async def downstream() -> None:
            reply: list[bytes] = []
            while line := await sreader.readline():
                reply.append(line)
                if line[3:4] == b"-":
                    continue  # a multi-line reply: pass it on whole, without STARTTLS
                kept = [x for x in reply if not x[4:].upper().startswith(b"STARTTLS")]
                self.stripped += len(reply) - len(kept)
                reply = []
                for i, x in enumerate(kept):
                    sep = b" " if i == len(kept) - 1 else b"-"
                    cwriter.write(x[:3] + sep + x[4:])
                await cwriter.drain()
            cwriter.close()

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.gather(upstream(), downstream())
