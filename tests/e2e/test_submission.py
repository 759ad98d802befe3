"""Submission (RFC 6409) on the STARTTLS and implicit-TLS ports, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl

import pytest

from pochta.tlsbinding import channel_bindings
from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient
from tests.e2e.test_mta import inbox

BODY = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: s\r\n\r\nHi Bob\r\n"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_starttls_auth_plain_delivers_and_fixes_headers(running_server: Server) -> None:
    port = running_server.port("submission", "starttls")

    def run() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("laptop")
            assert not c.has_extn("auth"), "AUTH must not be advertised before TLS"
            c.starttls(context=running_server.client_ssl())
            c.ehlo("laptop")
            assert "PLAIN" in c.esmtp_features["auth"]
            c.login("alice@example.test", "alice-pass")
            return c.sendmail("alice@example.test", ["bob@example.test"], BODY)

    assert await asyncio.to_thread(run) == {}
    [stored] = await inbox(running_server, "bob@example.test")
    assert b"with ESMTPSA id" in stored
    assert b"\r\nMessage-ID: <" in stored and b"\r\nDate: " in stored
    assert stored.endswith(b"\r\n\r\nHi Bob\r\n")


async def test_implicit_tls_and_remote_recipient_is_queued(running_server: Server) -> None:
    port = running_server.port("submission", "implicit")

    def run() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                              context=running_server.client_ssl()) as c:
            c.login("alice@example.test", "alice-pass")
            return c.sendmail("alice@example.test", ["carol@remote.test"], BODY)

    assert await asyncio.to_thread(run) == {}
    [item] = await running_server.store.list_queue()
    assert item.recipient.address == "carol@remote.test"
    assert item.envelope.sender == "alice@example.test"
    assert item.envelope.authenticated_as == "alice@example.test"


async def test_commands_before_starttls_are_refused(running_server: Server) -> None:
    c = await RawClient.connect(running_server.port("submission", "starttls"))
    assert (await c.reply())[0] == 220
    code, text = await c.cmd("EHLO laptop")
    assert code == 250 and "AUTH" not in text and "STARTTLS" in text
    for line in ("AUTH PLAIN " + plain("alice@example.test", "alice-pass"),
                 "MAIL FROM:<alice@example.test>"):
        code, text = await c.cmd(line)
        assert (code, text) == (530, "5.7.0 Must issue a STARTTLS command first")
    await c.close()


async def test_mail_before_auth_and_wrong_password(running_server: Server) -> None:
    c = await RawClient.connect(running_server.port("submission", "implicit"),
                                running_server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    code, text = await c.cmd("MAIL FROM:<alice@example.test>")
    assert (code, text) == (530, "5.7.0 Authentication required")
    bad_known = await c.cmd("AUTH PLAIN " + plain("alice@example.test", "wrong"))
    bad_unknown = await c.cmd("AUTH PLAIN " + plain("nobody@example.test", "wrong"))
    assert bad_known[0] == 535 and bad_known[1].startswith("5.7.8")
    assert bad_known == bad_unknown, "the reply must not reveal whether the account exists"
    await c.close()


async def test_sender_must_be_owned(running_server: Server) -> None:
    c = await RawClient.connect(running_server.port("submission", "implicit"),
                                running_server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    assert (await c.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pass")))[0] == 235
    code, text = await c.cmd("MAIL FROM:<bob@example.test>")
    assert code == 553 and text.startswith("5.7.1")
    # own address (with a +tag) is fine, but a forged From: header is refused after DATA
    assert (await c.cmd("MAIL FROM:<alice+lists@example.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    code, text = await c.cmd(b"From: Bob <bob@example.test>\r\nSubject: x\r\n\r\nforged\r\n.")
    assert code == 553 and text.startswith("5.7.1")
    await c.close()
    assert await inbox(running_server, "bob@example.test") == []


async def test_alias_owner_may_send_as_alias(running_server: Server) -> None:
    await running_server.store.add_alias("sales@example.test", ["alice@example.test"])
    port = running_server.port("submission", "implicit")

    def run() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                              context=running_server.client_ssl()) as c:
            c.login("alice@example.test", "alice-pass")
            msg = BODY.replace(b"From: alice@", b"From: sales@")
            return c.sendmail("sales@example.test", ["bob@example.test"], msg)

    assert await asyncio.to_thread(run) == {}


async def test_plaintext_on_implicit_port_is_dropped(running_server: Server) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running_server.port("submission", "implicit"))
    writer.write(b"EHLO plaintext\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    assert not data.startswith(b"220") and b"250" not in data
    writer.close()


async def test_starttls_discards_pipelined_commands(running_server: Server) -> None:
    c = await RawClient.connect(running_server.port("submission", "starttls"))
    await c.reply()
    await c.cmd("EHLO laptop")
    # An attacker's injected plaintext after STARTTLS must never run after the handshake.
    c.writer.write(b"STARTTLS\r\nAUTH PLAIN " + plain("alice@example.test", "alice-pass").encode()
                   + b"\r\n")
    await c.writer.drain()
    assert (await c.reply())[0] == 220
    await c.starttls(running_server.client_ssl())
    code, _text = await c.cmd("NOOP")
    assert code == 250, "the injected AUTH reply must not be waiting in the TLS stream"
    code, _ = await c.cmd("MAIL FROM:<alice@example.test>")
    assert code == 503 or code == 530  # EHLO needed again and not authenticated
    await c.close()


async def test_brute_force_from_one_ip_does_not_block_others(instance: Instance) -> None:
    server = await start_instance(
        instance, auth={"failure_delay": 0.01, "failures_before_lockout": 10,
                        "lockout_seconds": 60})
    try:
        port = server.port("submission", "implicit")
        # the attacker: many wrong passwords, reconnecting as the server closes
        locked = 0
        attempts = 0
        while attempts < 1000:
            c = await RawClient.connect(port, server.client_ssl())
            await c.reply()
            await c.cmd("EHLO attacker")
            try:
                while attempts < 1000:
                    attempts += 1
                    code, _ = await c.cmd("AUTH PLAIN " + plain("alice@example.test",
                                                                 f"guess{attempts}"))
                    assert code in (535, 454, 421)
                    if code == 454:
                        locked += 1
                    if code == 421:
                        break
            except ConnectionError:
                pass
            await c.close()
        assert locked > 900, "after a few failures the attacker must be refused outright"
        # the honest user, from another address (127.0.0.2 is loopback too)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=server.client_ssl(), local_addr=("127.0.0.2", 0))
        honest = RawClient(reader, writer)
        await honest.reply()
        await honest.cmd("EHLO honest")
        code, _ = await honest.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pass"))
        assert code == 235
        await honest.close()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


@pytest.mark.parametrize("mechanism", ["LOGIN"])
async def test_auth_login(running_server: Server, mechanism: str) -> None:
    c = await RawClient.connect(running_server.port("submission", "implicit"),
                                running_server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    code, text = await c.cmd("AUTH LOGIN")
    assert code == 334 and base64.b64decode(text) == b"Username:"
    code, text = await c.cmd(base64.b64encode(b"bob@example.test").decode())
    assert code == 334 and base64.b64decode(text) == b"Password:"
    code, _ = await c.cmd(base64.b64encode(b"bob-pass").decode())
    assert code == 235
    await c.close()


def _tls12_client(server: Server) -> ssl.SSLContext:
    ctx = server.client_ssl()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _scram_login(server: Server, port: int, mechanism: str, tls: ssl.SSLContext,
                       password: str) -> tuple[int, str]:
    import scramp  # type: ignore[import-untyped]

    c = await RawClient.connect(port, tls)
    await c.reply()
    code, ehlo = await c.cmd("EHLO laptop")
    assert mechanism in ehlo.split("AUTH ", 1)[1].split("\n")[0].split()
    if mechanism.endswith("-PLUS"):
        ssl_obj = c.writer.get_extra_info("ssl_object")
        binding = ("tls-unique", ssl_obj.get_channel_binding("tls-unique"))
        client = scramp.ScramClient([mechanism], "alice@example.test", password,
                                    channel_binding=binding)
    else:
        client = scramp.ScramClient([mechanism], "alice@example.test", password)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    code, text = await c.cmd(f"AUTH {mechanism} {first}")
    assert code == 334
    client.set_server_first(base64.b64decode(text).decode())
    code, text = await c.cmd(base64.b64encode(client.get_client_final().encode()).decode())
    if code == 334:  # server-final as a last challenge (RFC 4954 §4)
        client.set_server_final(base64.b64decode(text).decode())
        code, text = await c.cmd("")
    await c.close()
    return code, text


async def test_scram_sha_256_with_independent_client(running_server: Server) -> None:
    port = running_server.port("submission", "implicit")
    ok = await _scram_login(running_server, port, "SCRAM-SHA-256",
                            running_server.client_ssl(), "alice-pass")
    assert ok[0] == 235
    bad = await _scram_login(running_server, port, "SCRAM-SHA-256",
                             running_server.client_ssl(), "wrong-pass")
    assert bad[0] == 535


async def test_scram_plus_with_tls_unique_on_tls12(plus_server: Server) -> None:
    port = plus_server.port("submission", "implicit")
    code, _ = await _scram_login(plus_server, port, "SCRAM-SHA-256-PLUS",
                                 _tls12_client(plus_server), "alice-pass")
    assert code == 235


async def test_rate_limit_and_received_options(instance: Instance) -> None:
    server = await start_instance(
        instance, submission={"messages_per_hour": 2, "recipients_per_hour": 100},
        smtp={"received_show_auth": True, "received_hide_client_ip": True})
    try:
        c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
        await c.reply()
        await c.cmd("EHLO laptop")
        assert (await c.cmd("AUTH PLAIN " + plain("bob@example.test", "bob-pass")))[0] == 235
        code, text = await c.cmd("RCPT TO:<alice>")
        assert code == 503  # no MAIL yet: sequence error comes first
        for i in range(3):
            code, text = await c.cmd("MAIL FROM:<bob@example.test>")
            if i == 2:
                assert code == 451 and text.startswith("4.7.1") and "per hour" in text
                break
            assert code == 250
            code, text = await c.cmd("RCPT TO:<alice>")
            assert code == 501 and text.startswith("5.1.3"), "a recipient needs a domain"
            assert (await c.cmd("RCPT TO:<alice@example.test>"))[0] == 250
            await c.cmd("DATA")
            assert (await c.cmd(b"From: bob@example.test\r\n\r\nhi\r\n."))[0] == 250
        await c.close()
        stored = await inbox(server, "alice@example.test")
        assert len(stored) == 2
        assert b"(Authenticated sender: bob@example.test)" in stored[0]
        assert b"127.0.0.1" not in stored[0].split(b"\r\n\r\n")[0]
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_scram_plus_with_tls_exporter_on_tls13(plus_server: Server) -> None:
    """RFC 9266: tls-exporter binding on TLS 1.3 (scramp lacks it: a hand-made client)."""
    from tests.test_sasl_scram import TinyClient

    c = await RawClient.connect(plus_server.port("submission", "implicit"),
                                plus_server.client_ssl())
    await c.reply()
    _, ehlo = await c.cmd("EHLO laptop")
    assert "SCRAM-SHA-256-PLUS" in ehlo
    ssl_obj = c.writer.get_extra_info("ssl_object")
    assert ssl_obj.version() == "TLSv1.3"
    [exporter] = [b for b in channel_bindings(ssl_obj) if b.type == "tls-exporter"]
    client = TinyClient("alice@example.test", "alice-pass", "p=tls-exporter,,", exporter.data,
                        nonce="clientnonce123")
    code, text = await c.cmd("AUTH SCRAM-SHA-256-PLUS " + base64.b64encode(client.first())
                             .decode())
    assert code == 334
    final = client.final(base64.b64decode(text))
    code, text = await c.cmd(base64.b64encode(final).decode())
    assert code == 334
    assert base64.b64decode(text) == b"v=" + base64.b64encode(client.server_signature)
    assert (await c.cmd(""))[0] == 235
    await c.close()
