"""Which SASL mechanisms SMTP, IMAP and POP3 offer (services/sasl_driver.py ``sasl_offer``),
over real TLS sockets: SCRAM-SHA-256-PLUS only with ``[auth] scram_plus = true``."""

from __future__ import annotations

import asyncio
import base64

from pochta.config import AuthConfig
from pochta.proto.sasl.base import ChannelBinding
from pochta.services.sasl_driver import SASLDriver, sasl_offer
from tests.conftest import Server
from tests.e2e.smtpclient import RawClient
from tests.test_sasl_scram import TinyClient


async def _smtp_auth_line(server: Server) -> str:
    c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
    await c.reply()
    _, ehlo = await c.cmd("EHLO laptop")
    await c.close()
    [line] = [x for x in ehlo.split("\n") if x.startswith("AUTH ")]
    return line


async def _imap_caps(server: Server) -> bytes:
    reader, writer = await asyncio.open_connection(
        server.host, server.port("imap", "implicit"), ssl=server.client_ssl())
    greeting = await reader.readline()
    writer.close()
    return greeting


async def _pop3_capa(server: Server) -> bytes:
    reader, writer = await asyncio.open_connection(
        server.host, server.port("pop3", "implicit"), ssl=server.client_ssl())
    await reader.readline()
    writer.write(b"CAPA\r\n")
    out = b""
    while not out.endswith(b"\r\n.\r\n"):
        out += await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return out


async def test_default_offers_no_plus_anywhere(running_server: Server) -> None:
    smtp = await _smtp_auth_line(running_server)
    assert smtp.split() == ["AUTH", "SCRAM-SHA-256", "PLAIN", "LOGIN"]
    imap = await _imap_caps(running_server)
    assert b"AUTH=SCRAM-SHA-256 " in imap and b"-PLUS" not in imap
    pop3 = await _pop3_capa(running_server)
    assert b"SASL SCRAM-SHA-256 PLAIN LOGIN\r\n" in pop3


async def test_scram_plus_config_offers_plus_everywhere(plus_server: Server) -> None:
    assert "SCRAM-SHA-256-PLUS" in (await _smtp_auth_line(plus_server)).split()
    assert b"AUTH=SCRAM-SHA-256-PLUS" in await _imap_caps(plus_server)
    assert b"SCRAM-SHA-256-PLUS" in await _pop3_capa(plus_server)


async def _scram_y(server: Server) -> int:
    """SCRAM-SHA-256 with gs2 flag "y": the client could bind but saw no -PLUS."""
    c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    client = TinyClient("alice@example.test", "alice-pass", "y,,", nonce="ynonce42")
    code, text = await c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
    if code == 334:
        final = client.final(base64.b64decode(text))
        code, text = await c.cmd(base64.b64encode(final).decode())
        if code == 334:
            code, _ = await c.cmd("")
    await c.close()
    return code


async def test_y_flag_accepted_when_plus_not_offered(running_server: Server) -> None:
    # RFC 5802 §6: "y" is a downgrade only if the server did advertise -PLUS.
    assert await _scram_y(running_server) == 235


async def test_y_flag_refused_when_plus_offered(plus_server: Server) -> None:
    assert await _scram_y(plus_server) == 535


class _Conn:
    def __init__(self, tls_active: bool) -> None:
        self.tls_active = tls_active
        self.asked = 0

    def channel_bindings(self) -> tuple[ChannelBinding, ...]:
        self.asked += 1
        return (ChannelBinding("tls-exporter", b"x" * 32),)


def test_offer_does_not_touch_the_binding_when_off() -> None:
    conn = _Conn(True)
    offer = sasl_offer(AuthConfig(), conn, allow_plaintext=False)
    assert offer.mechanisms == ("SCRAM-SHA-256", "PLAIN", "LOGIN") and offer.bindings is None
    assert conn.asked == 0, "with -PLUS off the ctypes exporter is never used"
    plus = sasl_offer(AuthConfig(scram_plus=True), conn, allow_plaintext=False)
    assert plus.mechanisms[0] == "SCRAM-SHA-256-PLUS" and plus.bindings
    no_tls = sasl_offer(AuthConfig(scram_plus=True), _Conn(False), allow_plaintext=False)
    assert no_tls.mechanisms == ("SCRAM-SHA-256",)


def test_driver_refuses_what_was_not_offered() -> None:
    offer = sasl_offer(AuthConfig(), _Conn(False), allow_plaintext=False)
    auth = object()
    for name in ("PLAIN", "LOGIN", "SCRAM-SHA-256-PLUS", "CRAM-MD5"):
        assert SASLDriver.create(name, offer, auth, "127.0.0.1") is None  # type: ignore[arg-type]
    assert SASLDriver.create("scram-sha-256", offer, auth, "127.0.0.1") is not None  # type: ignore[arg-type]
