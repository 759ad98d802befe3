"""Sieve in IMAP (RFC 6785), end to end with imaplib: a script uploaded over ManageSieve
and named by a mailbox's /shared/imapsieve/script METADATA entry runs on APPEND, COPY and
STORE into that mailbox: it flags, files a copy elsewhere, and moves a message out."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import mailbox, upload

LISTENERS = [
    {"role": "imap", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]

SCRIPT = r"""require ["imapsieve", "environment", "fileinto", "imap4flags", "copy"];
if environment :is "imap.cause" "APPEND" {
    addflag "filtered";
}
if allof (environment :is "imap.cause" "COPY", header :contains "subject" "invoice") {
    fileinto :copy "Invoices";
}
if allof (environment :is "imap.cause" "FLAG",
          environment :contains "imap.changedflags" "$Junk") {
    fileinto "Junk";
}
"""


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


def imap_session(server: Server) -> list[str]:
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap"), ssl_context=server.client_ssl())
    out: list[str] = []
    try:
        m.login("alice@example.test", "alice-pass")
        typ, data = m.capability()
        out += [c for c in data[0].decode().split() if c.startswith("IMAPSIEVE=")]
        for box in ("Work", "Invoices"):
            assert m.create(box)[0] == "OK"
        typ, data = m.xatom("SETMETADATA", 'Work (/shared/imapsieve/script "imap")')
        assert typ == "OK", data
        # APPEND into Work: the script flags it
        assert m.append("Work", None, None, b"Subject: note\r\n\r\nhello\r\n")[0] == "OK"
        # a message in INBOX (no script there), copied into Work: filed to Invoices too
        assert m.append("INBOX", None, None,
                        b"Subject: your invoice\r\n\r\n42 EUR\r\n")[0] == "OK"
        m.select("INBOX")
        assert m.copy("1", "Work")[0] == "OK"
        # STORE $Junk on the note in Work: the script moves it to Junk
        m.select("Work")
        typ, data = m.store("1", "+FLAGS", "($Junk)")
        assert typ == "OK", data
        m.noop()
        return out
    finally:
        m.logout()


async def test_imapsieve_on_append_copy_and_store(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass", SCRIPT, name="imap")
    caps = await asyncio.to_thread(imap_session, server)
    assert caps == ["IMAPSIEVE=sieve://mail.example.test"]
    work = await mailbox(server, "alice@example.test", "Work")
    # the note left Work (fileinto without :copy); the copied invoice stays there
    assert len(work) == 1 and "filtered" not in work[0].flags
    invoices = await mailbox(server, "alice@example.test", "Invoices")
    assert len(invoices) == 1 and invoices[0].blob_id == work[0].blob_id
    [junk] = await mailbox(server, "alice@example.test", "Junk")
    assert {"filtered", "$Junk"} <= junk.flags
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
