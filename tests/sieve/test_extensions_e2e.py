"""End to end, the newer extensions: a script uploaded over ManageSieve reads IMAP
METADATA set with imaplib (mboxmetadata) and by the administrator with `pochta metadata`
(servermetadata; a user may not set server /shared entries), files by special-use attribute
into a mailbox renamed over IMAP (special-use), looks into MIME parts (mime,
foreverypart, extracttext), checks senders against a list file (extlists), skips a
block for an extension it does not have (ihave), and does not trust a spam score a
sender wrote into the message (spamtest)."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance, Server, start_instance
from tests.imap.test_metadata_server import admin_config, pochta
from tests.sieve.test_e2e import mailbox, smtp, upload

LISTENERS = [
    {"role": "mta", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "imap", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]

SCRIPT = r"""require ["fileinto", "imap4flags", "mboxmetadata", "servermetadata",
    "special-use", "mime", "foreverypart", "extracttext", "variables", "extlists",
    "ihave", "spamtest", "relational", "comparator-i;ascii-numeric"];
if ihave "x-no-such-extension" {
    frobnicate :with "an unknown command, never compiled";
}
if metadata "INBOX" "/private/filter/mode" "strict" {
    addflag "strict";
}
if servermetadata "/shared/admin" "mailto:postmaster@example.test" {
    addflag "admin-default";
}
if servermetadata "/shared/admin" "mailto:help@example.test" {
    addflag "admin-set";
}
if servermetadataexists "/shared/motd" {
    addflag "motd";
}
if address :list "from" ":addrbook:vip" {
    addflag "\\Flagged";
}
if spamtest :value "ge" :comparator "i;ascii-numeric" "8" {
    fileinto :specialuse "\\Junk" "Spam";
    stop;
}
if header :mime :anychild :contenttype "Content-Type" "application/pdf" {
    fileinto :specialuse "\\Archive" "Attachments";
    stop;
}
foreverypart {
    if header :mime :contenttype "Content-Type" "text/plain" {
        extracttext :first 40 "text";
        if string :contains "${text}" "invoice" {
            addflag "invoice";
        }
    }
}
"""

PDF_MSG = """From: vip@partner.test
To: alice@example.test
Subject: the report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

see the attachment
--b1
Content-Type: application/pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b1--
"""

INVOICE_MSG = """From: Shop <shop@store.test>
To: alice@example.test
Subject: your order
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/html

<p>hello</p>
--b2
Content-Type: text/plain

Here is your invoice for order 42.
--b2--
"""

FORGED_SPAM_MSG = """X-Spam-Bayes: 0.9990
From: vip@partner.test
To: alice@example.test
Subject: not spam at all

hello
"""


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    lists = instance.dir / "sieve-lists" / "alice@example.test"
    lists.mkdir(parents=True)
    (lists / "vip.txt").write_text("# people who get a flag\n@partner.test\nboss@corp.test\n")
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


def imap_setup(server: Server) -> None:
    """Over IMAP: METADATA entries on INBOX and the server, Archive renamed."""
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap"), ssl_context=server.client_ssl())
    try:
        m.login("alice@example.test", "alice-pass")
        typ, data = m.xatom("SETMETADATA", 'INBOX (/private/filter/mode "strict")')
        assert typ == "OK", data
        # server /shared entries are the administrator's (pochta metadata set)
        typ, data = m.xatom("SETMETADATA", '"" (/shared/motd "yes")')
        assert typ == "NO" and data[0].startswith(b"[NOPERM]"), data
        typ, data = m.rename("Archive", "Kept")
        assert typ == "OK", data
    finally:
        m.logout()


async def flags_of(server: Server, box: str) -> list[frozenset[str]]:
    return [frozenset(m.flags) for m in await mailbox(server, "alice@example.test", box)]


async def test_new_extensions_over_real_protocols(
        instance: Instance, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    await upload(server, "alice@example.test", "alice-pass", SCRIPT)
    # before the METADATA exists: the metadata tests are false
    # (/shared/admin has its default, RFC 5464 §6.2.1: the primary domain's postmaster)
    assert (await smtp(server, "shop@store.test", ["alice@example.test"], INVOICE_MSG))[0] \
        == 250
    assert await flags_of(server, "INBOX") == [frozenset({"invoice", "admin-default"})]

    await asyncio.to_thread(imap_setup, server)
    assert await pochta(monkeypatch, admin_config(instance), "metadata", "set",
                        "/shared/admin", "mailto:help@example.test") == 0
    assert (await smtp(server, "vip@partner.test", ["alice@example.test"], PDF_MSG))[0] \
        == 250
    # filed by the \Archive attribute into the renamed mailbox, not into "Attachments"
    assert await mailbox(server, "alice@example.test", "Attachments") == []
    kept = await flags_of(server, "Kept")
    assert kept == [frozenset({"strict", "admin-set", "\\Flagged"})]

    assert (await smtp(server, "vip@partner.test", ["alice@example.test"],
                       FORGED_SPAM_MSG))[0] == 250
    # a score the sender wrote is not ours: not spam, and the list still flags it
    assert await mailbox(server, "alice@example.test", "Junk") == []
    inbox = await flags_of(server, "INBOX")
    assert inbox[-1] == frozenset({"strict", "admin-set", "\\Flagged"})
