"""SRS for Sieve redirects, end to end: a script uploaded over ManageSieve redirects mail
from a foreign sender; the queue hands it to the next hop (a real SMTP sink) with an
SRS0 envelope sender on our SRS domain, so SPF passes there; the next hop bounces it to
that address and the bounce comes back through our MTA, the queue, to the original
sender. Forged or foreign SRS addresses are unknown users; our own users' senders and
the null sender are never rewritten."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator

import pytest

from pochta.transport_security.srs import SRS, load_secret
from tests.conftest import Instance, Server, start_instance
from tests.queue.sink import Sink
from tests.sieve.test_e2e import LISTENERS, upload


async def _wait(cond: object, tries: int = 200) -> None:
    for _ in range(tries):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def _server(instance: Instance, sink: Sink, **overrides: object) -> Server:
    return await start_instance(
        instance, run_queue=True, listeners=LISTENERS,
        routes=[{"domain": d, "host": "127.0.0.1", "port": sink.port, "tls": "none"}
                for d in ("elsewhere.test", "sender.test")], **overrides)


def _send(port: int, sender: str, rcpt: str, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail(sender, [rcpt], body)


async def test_redirect_is_srs_rewritten_and_its_bounce_comes_back(
        instance: Instance, sink: Sink) -> None:
    server = await _server(instance, sink)
    try:
        await upload(server, "alice@example.test", "alice-pass",
                     'redirect "alice@elsewhere.test";')
        mta = server.port("mta")
        await asyncio.to_thread(_send, mta, "dave@sender.test", "alice@example.test",
                                b"From: dave@sender.test\r\nSubject: hi\r\n\r\nhello\r\n")
        await _wait(lambda: sink.messages)
        [redirected] = sink.messages
        assert redirected.rcpts == ["alice@elsewhere.test"]
        # SRS0=HHHH=TT=sender.test=dave@<hostname>: the secret is in the data directory
        srs = SRS(load_secret(instance.config().data_path / "srs-secret"),
                  "mail.example.test")
        assert redirected.sender.startswith("SRS0=")
        assert redirected.sender.endswith("=sender.test=dave@mail.example.test")
        assert srs.reverse(redirected.sender) == "dave@sender.test"
        assert b"X-Sieve-Redirected-From: <alice@example.test>" in redirected.data

        # the next hop bounces it to the SRS address: it reaches dave, from <>
        await asyncio.to_thread(
            _send, mta, "", redirected.sender,
            b"From: MAILER-DAEMON@elsewhere.test\r\nSubject: Undelivered\r\n\r\nx\r\n")
        await _wait(lambda: len(sink.messages) > 1)
        bounce = sink.messages[1]
        assert bounce.sender == "" and bounce.rcpts == ["dave@sender.test"]
        assert b"Subject: Undelivered" in bounce.data

        # forged hash, or an SRS address of another domain: unknown users
        forged = "SRS0=AAAA" + redirected.sender[9:]
        for bad in (forged, "SRS0=AAAA=AA=sender.test=dave@other.test"):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                await asyncio.to_thread(_send, mta, "", bad, b"Subject: x\r\n\r\nx\r\n")

        # a local sender and the null sender keep their envelope sender
        await asyncio.to_thread(_send, mta, "bob@example.test", "alice@example.test",
                                b"From: bob@example.test\r\nSubject: 2\r\n\r\nx\r\n")
        await asyncio.to_thread(_send, mta, "", "alice@example.test",
                                b"From: MAILER-DAEMON@x.test\r\nSubject: 3\r\n\r\nx\r\n")
        await _wait(lambda: len(sink.messages) > 3)
        assert sorted(m.sender for m in sink.messages[2:]) == ["", "bob@example.test"]
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_redirect_sender_recipient_mode(instance: Instance, sink: Sink) -> None:
    server = await _server(instance, sink, sieve={"redirect_sender": "recipient"})
    try:
        await upload(server, "alice@example.test", "alice-pass",
                     'require "copy"; redirect :copy "alice@elsewhere.test";')
        await asyncio.to_thread(_send, server.port("mta"), "dave@sender.test",
                                "alice@example.test", b"Subject: hi\r\n\r\nhello\r\n")
        await _wait(lambda: sink.messages)
        assert sink.messages[0].sender == "alice@example.test"
        # no SRS: an SRS-looking address is just an unknown user
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(_send, server.port("mta"), "",
                                    "SRS0=AAAA=AA=sender.test=dave@mail.example.test",
                                    b"Subject: x\r\n\r\nx\r\n")
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
