"""The MTA role over real sockets with Python's smtplib."""

from __future__ import annotations

import asyncio
import smtplib

from tests.conftest import Server

MESSAGE = (b"From: someone@elsewhere.test\r\nTo: bob@example.test\r\nSubject: hi\r\n"
           b"\r\nHello Bob\r\n")


def send(port: int, sender: str, rcpts: list[str], msg: bytes, starttls: bool = False,
         server: Server | None = None) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.elsewhere.test")
        if starttls:
            assert server is not None
            client.starttls(context=server.client_ssl())
            client.ehlo("client.elsewhere.test")
        return client.sendmail(sender, rcpts, msg)


async def inbox(server: Server, address: str) -> list[bytes]:
    account = await server.store.get_account(address)
    assert account is not None
    box = await server.store.get_mailbox(account.id, "INBOX")
    assert box is not None
    messages = await server.store.list_messages(box.id)
    return [await server.store.read_blob(m.blob_id) for m in messages]


async def test_delivers_to_local_user(running_server: Server) -> None:
    port = running_server.port("mta")
    refused = await asyncio.to_thread(send, port, "someone@elsewhere.test",
                                      ["bob@example.test"], MESSAGE)
    assert refused == {}
    [stored] = await inbox(running_server, "bob@example.test")
    assert stored.startswith(b"Return-Path: <someone@elsewhere.test>\r\n"
                             b"Received: from client.elsewhere.test ([127.0.0.1])")
    assert b"with ESMTP id " in stored
    assert b"for <bob@example.test>;" in stored
    assert stored.endswith(MESSAGE)


async def test_starttls_received_header_names_cipher(running_server: Server) -> None:
    port = running_server.port("mta")
    await asyncio.to_thread(send, port, "a@elsewhere.test", ["bob@example.test"], MESSAGE,
                            True, running_server)
    [stored] = await inbox(running_server, "bob@example.test")
    assert b"(using TLSv1.3 with cipher " in stored
    assert b"with ESMTPS id" in stored


async def test_unknown_user_and_relay_refused(running_server: Server) -> None:
    port = running_server.port("mta")

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("x.test")
            client.mail("a@elsewhere.test")
            unknown = client.rcpt("nobody@example.test")
            relay = client.rcpt("victim@elsewhere.test")
            return unknown, relay

    unknown, relay = await asyncio.to_thread(run)
    assert unknown[0] == 550 and unknown[1].startswith(b"5.1.1")
    assert relay[0] == 554 and relay[1].startswith(b"5.7.1") and b"Relay access denied" in relay[1]
