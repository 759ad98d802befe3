"""Suppressions for ordinary SMTP accounts (issue 18): a normal user (password login on
submission, no API key) of a domain with ``[sending] smtp_suppression`` on. A suppressed
recipient is not sent to: a ``suppressed`` event, a DSN in the sender's INBOX (read with
imaplib); a hard bounce during delivery suppresses the address; a domain without the
setting is not affected."""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import smtplib
from collections.abc import AsyncIterator

import pytest

from pochta.storage.interfaces_sending import ALL_STREAMS, EventKind, Suppression
from tests.conftest import USERS, Instance
from tests.queue.sink import Sink
from tests.sending.helpers import SendingServer, sending_server


@pytest.fixture
async def smtp_api(instance: Instance) -> AsyncIterator[SendingServer]:
    sink = Sink(rcpt_replies={"gone@remote.test": b"550 5.1.1 <gone@remote.test>: no such "
                                                  b"user\r\n"})
    async for s in sending_server(instance, sink=sink,
                                  sending={"smtp_suppression": ["example.test"]}):
        yield s


def submit(api: SendingServer, user: str, rcpts: list[str], subject: str) -> dict[str, object]:
    port = api.server.port("submission", "implicit")
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                          context=api.server.client_ssl()) as c:
        c.login(user, USERS[user])
        msg = (f"From: {user}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n\r\n"
               "hello\r\n").encode()
        return dict(c.sendmail(user, rcpts, msg))


def inbox(api: SendingServer, user: str) -> list[email.message.EmailMessage]:
    port = api.server.port("imap", "implicit")
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=api.server.client_ssl()) as c:
        c.login(user, USERS[user])
        c.select("INBOX", readonly=True)
        _, data = c.search(None, "ALL")
        out = []
        for num in data[0].split():
            _, parts = c.fetch(num, "(RFC822)")
            first = parts[0]
            assert isinstance(first, tuple)
            raw = first[1]
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, email.message.EmailMessage)
            out.append(msg)
        return out


async def test_suppressed_recipient_of_a_normal_user_is_not_sent_to(
        smtp_api: SendingServer) -> None:
    api = smtp_api
    await api.store.add_suppressions([Suppression("example.test", ALL_STREAMS,
                                                  "bad@remote.test", "complaint", 1.0)])
    # an unsubscribe from the bulk stream does not stop a person's own mail
    await api.store.add_suppressions([Suppression("example.test", "bulk",
                                                  "reader@remote.test", "unsubscribe", 1.0)])
    refused = await asyncio.to_thread(
        submit, api, "alice@example.test",
        ["ok@remote.test", "bad@remote.test", "reader@remote.test"], "Lunch?")
    assert refused == {}
    for _ in range(100):
        if len(api.sink.recipients()) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert sorted(api.sink.recipients()) == ["ok@remote.test", "reader@remote.test"]
    [event] = await api.events(kinds=(EventKind.SUPPRESSED,))
    assert event.recipient == "bad@remote.test" and event.stream == "smtp"
    assert not [i for i in await api.store.list_queue() if i.recipient.address ==
                "bad@remote.test"]  # never queued
    [dsn] = await asyncio.to_thread(inbox, api, "alice@example.test")
    assert dsn.get_content_type() == "multipart/report"
    text = dsn.as_string()
    assert "bad@remote.test" in text and "5.7.1" in text and "suppression list" in text
    assert "Action: failed" in text and "Lunch?" in text


async def test_hard_bounce_of_a_normal_user_suppresses_the_address(
        smtp_api: SendingServer) -> None:
    api = smtp_api
    assert await asyncio.to_thread(submit, api, "alice@example.test", ["gone@remote.test"],
                                   "first") == {}
    for _ in range(200):
        if await api.store.suppressed("example.test", "smtp", ["gone@remote.test"]):
            break
        await asyncio.sleep(0.05)
    [entry] = await api.store.list_suppressions("example.test")
    assert entry.address == "gone@remote.test" and entry.reason == "bounce"
    assert entry.stream == ALL_STREAMS and "5.1.1" in entry.detail
    # the next message to it is not sent
    before = len(api.sink.commands)
    assert await asyncio.to_thread(submit, api, "alice@example.test", ["gone@remote.test"],
                                   "second") == {}
    await asyncio.sleep(0.5)
    assert not any("gone@remote.test" in c for c in api.sink.commands[before:])
    assert [e.recipient for e in await api.events(kinds=(EventKind.SUPPRESSED,))] == [
        "gone@remote.test"]


async def test_domain_without_the_setting_is_not_filtered(api: SendingServer) -> None:
    await api.store.add_suppressions([Suppression("example.test", ALL_STREAMS,
                                                  "bad@remote.test", "complaint", 1.0)])
    assert await asyncio.to_thread(submit, api, "bob@example.test", ["bad@remote.test"],
                                   "hi") == {}
    for _ in range(100):
        if api.sink.recipients():
            break
        await asyncio.sleep(0.05)
    assert api.sink.recipients() == ["bad@remote.test"]
