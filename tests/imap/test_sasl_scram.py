"""AUTHENTICATE SCRAM-SHA-256 with an independent client (scramp), with and without TLS."""

from __future__ import annotations

import base64
import ssl

import scramp  # type: ignore[import-untyped]

from tests.conftest import Server
from tests.imap.helpers import Client, connect


async def _scram(c: Client, user: str, password: str) -> bytes:
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    c.send(f"s AUTHENTICATE SCRAM-SHA-256 {first}\r\n".encode())  # SASL-IR
    line = await c.line()
    assert line.startswith(b"+ "), line
    client.set_server_first(base64.b64decode(line[2:].strip()).decode())
    c.send(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
    line = await c.line()
    if not line.startswith(b"+ "):
        return line
    client.set_server_final(base64.b64decode(line[2:].strip()).decode())  # verifies server
    c.send(b"\r\n")
    return await c.line()


async def test_scram_plaintext_listener(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        line = await _scram(c, "alice@example.test", "alice-pass")
        assert line.startswith(b"s OK [CAPABILITY"), line
        assert (await c.cmd("SELECT INBOX"))[-1].split(b" ")[1] == b"OK"


async def test_scram_wrong_password(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        line = await _scram(c, "alice@example.test", "wrong")
        assert line == b"s NO [AUTHENTICATIONFAILED] Authentication failed\r\n"


async def test_scram_over_implicit_tls_and_plus_advertised(plus_server: Server) -> None:
    """With ``[auth] scram_plus`` on, -PLUS is advertised; plain SCRAM still works."""
    ctx = plus_server.client_ssl()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    async with connect(plus_server, "implicit", ctx) as c:
        caps = (await c.cmd("CAPABILITY"))[0]
        assert b"AUTH=SCRAM-SHA-256-PLUS" in caps and b"AUTH=PLAIN" in caps
        line = await _scram(c, "bob@example.test", "bob-pass")
        assert line.startswith(b"s OK"), line
