"""The one TLS client context factory, against a real TLS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pochta.mail.tls import client_context
from pochta.tlsutil import generate_self_signed


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed("mx.example.test", cert, key, days=1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=ctx)
    yield server.sockets[0].getsockname()[1], str(cert)
    server.close()
    await server.wait_closed()


async def _hello(port: int, ctx: ssl.SSLContext, name: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=name)
    try:
        return await reader.readline()
    finally:
        writer.close()


def test_settings() -> None:
    strict = client_context()
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version is ssl.TLSVersion.TLSv1_2
    loose = client_context(verify=False)
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    assert loose.minimum_version is ssl.TLSVersion.TLSv1_2
    default = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).minimum_version
    assert client_context(verify=False, min_version=None).minimum_version is default


async def test_verified_against_cafile(tls_server: tuple[int, str]) -> None:
    port, cafile = tls_server
    assert await _hello(port, client_context(cafile=cafile), "mx.example.test") == b"hello\n"


async def test_unknown_issuer_and_wrong_name_refused(tls_server: tuple[int, str]) -> None:
    port, cafile = tls_server
    with pytest.raises(ssl.SSLCertVerificationError):
        await _hello(port, client_context(), "mx.example.test")  # system store only
    with pytest.raises(ssl.SSLCertVerificationError):
        await _hello(port, client_context(cafile=cafile), "other.example.test")


async def test_opportunistic_takes_any_certificate(tls_server: tuple[int, str]) -> None:
    port, _ = tls_server
    ctx = client_context(verify=False)
    assert await _hello(port, ctx, "other.example.test") == b"hello\n"
