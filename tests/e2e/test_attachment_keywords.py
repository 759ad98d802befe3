"""[imap] attachment_keywords: a message delivered over SMTP (small, or big and spooled,
with Sieve or without) or APPENDed over IMAP gets $HasAttachment or $HasNoAttachment;
a client that names one keeps its own choice (run on both backends by `make test`)."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance, Server, start_instance
from tests.e2e.test_mta import send

PLAIN = (b"From: someone@elsewhere.test\r\nTo: bob@example.test\r\nSubject: plain\r\n\r\n"
         b"Content-Disposition: attachment\r\n")


def with_pdf(filler: int = 0) -> bytes:
    return (b"From: someone@elsewhere.test\r\nTo: bob@example.test\r\nSubject: pdf\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\n" + b"text line\r\n" * filler +
            b"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
            b"filename=\"a.pdf\"\r\n\r\nJVBERi0=\r\n--b1--\r\n")


@pytest.fixture
async def running_server(instance: Instance) -> AsyncIterator[Server]:
    """The shared fixture's server with the setting's default (on)."""
    server = await start_instance(instance, imap={})
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def flags_of(server: Server, address: str, mailbox: str = "INBOX"
                   ) -> list[frozenset[str]]:
    account = await server.store.get_account(address)
    assert account is not None
    box = await server.store.get_mailbox(account.id, mailbox)
    assert box is not None
    return [m.flags for m in await server.store.list_messages(box.id)]


async def test_delivered_and_appended_messages_get_attachment_keywords(
        running_server: Server) -> None:
    port = running_server.port("mta")
    # the big one (3 MB of text before its attachment) is spooled while it arrives
    for message in (PLAIN, with_pdf(), with_pdf(300_000)):
        assert await asyncio.to_thread(send, port, "someone@elsewhere.test",
                                       ["bob@example.test"], message) == {}
    assert await flags_of(running_server, "bob@example.test") == [
        {"$HasNoAttachment"}, {"$HasAttachment"}, {"$HasAttachment"}]

    def append() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", running_server.port("imap", "implicit"),
                                 ssl_context=running_server.client_ssl())
        try:
            imap.login("alice@example.test", "alice-pass")
            assert imap.append("INBOX", "(\\Seen)", None, with_pdf())[0] == "OK"
            assert imap.append("INBOX", None, None, PLAIN)[0] == "OK"
            # the client says which: kept as it is
            assert imap.append("INBOX", "($HasNoAttachment)", None, with_pdf())[0] == "OK"
        finally:
            imap.logout()

    await asyncio.to_thread(append)
    assert await flags_of(running_server, "alice@example.test") == [
        {"\\Seen", "$HasAttachment"}, {"$HasNoAttachment"}, {"$HasNoAttachment"}]


async def test_sieve_filed_copies_carry_the_keyword(running_server: Server) -> None:
    store = running_server.store
    bob = await store.get_account("bob@example.test")
    assert bob is not None
    await store.put_sieve_script(bob.id, "main",
                                 'require ["fileinto", "imap4flags", "mailbox"];\n'
                                 'fileinto :create :flags "\\\\Flagged" "Docs";\n')
    await store.set_active_sieve_script(bob.id, "main")
    assert await asyncio.to_thread(send, running_server.port("mta"),
                                   "someone@elsewhere.test", ["bob@example.test"],
                                   with_pdf()) == {}
    assert await flags_of(running_server, "bob@example.test", "Docs") == [
        {"\\Flagged", "$HasAttachment"}]
