"""REPLACE and UID REPLACE (RFC 8508) over a real socket: the RFC's examples, CATENATE
(§4.2), another target mailbox, the errors that leave everything as it was, the net quota
(§3.4), a spooled message, and imaplib as a client."""

from __future__ import annotations

import asyncio
import imaplib
import re
from typing import Any

from tests.conftest import Server
from tests.imap.helpers import Client, connect, joined, st

DRAFT = (b"Date: Thu, 1 Jan 2015 00:05:00 -0500 (EST)\r\n"
         b"From: Fritz Schmidt <fritz.ze@example.org>\r\nSubject: happy new year !!\r\n"
         b"To: miss.mitzy@example.org\r\nMessage-Id: <B238822388-0100000@example.org>\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
         b"Just saw the best fireworks show. Wish you were here.\r\n")


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


async def drafts(c: Client, n: int) -> int:
    """``n`` drafts in Drafts, selected; returns its UIDVALIDITY."""
    for i in range(n):
        resp = await c.cmd(b"APPEND Drafts (\\Draft) " + literal(DRAFT + b"v%d\r\n" % i))
        assert st(resp).startswith(b"OK"), resp
    selected = joined(await c.cmd("SELECT Drafts"))
    m = re.search(rb"UIDVALIDITY (\d+)", selected)
    assert m is not None, selected
    return int(m.group(1))


async def test_rfc8508_examples(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" REPLACE" in (await c.cmd("CAPABILITY"))[0]
        v = await drafts(c, 4)
        # §3.2: the fourth message replaced; APPENDUID before EXPUNGE (§4.3). The RFC's
        # example has EXISTS first; the sync sends expunges first, as after any command
        # (both orders describe the same mailbox; \Recent for IMAP4rev1 clients)
        resp = await c.cmd(b"REPLACE 4 Drafts (\\Seen \\Draft) " + literal(DRAFT))
        assert resp == [b"* OK [APPENDUID %d 5] Replacement message ready\r\n" % v,
                        b"* 4 EXPUNGE\r\n", b"* 4 EXISTS\r\n", b"* 4 RECENT\r\n",
                        resp[-1]], resp
        assert resp[-1].endswith(b" OK REPLACE completed\r\n"), resp
        # §3.3: UID REPLACE 5 (the new one, now message 4)
        resp = await c.cmd(b"UID REPLACE 5 Drafts (\\Seen \\Draft) "
                           + literal(DRAFT + b"Hopefully next year you can join us.\r\n"))
        assert resp[:3] == [b"* OK [APPENDUID %d 6] Replacement message ready\r\n" % v,
                            b"* 4 EXPUNGE\r\n", b"* 4 EXISTS\r\n"], resp
        text = joined(await c.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[TEXT])"))
        assert text.count(b"\r\n* ") + text.startswith(b"* ") == 4, text
        assert b"UID 6 FLAGS (\\Draft \\Recent \\Seen)" in text, text
        assert b"join us." in text and b"UID 5 " not in text and b"UID 4 " not in text
        # §4.2: with CATENATE, new header fields before the stored message's text
        resp = await c.cmd(b"UID REPLACE 6 Drafts CATENATE (TEXT "
                           + literal(b"X-Edited: yes\r\n") + b' URL "/Drafts/;UID=6")')
        assert resp[0] == b"* OK [APPENDUID %d 7] Replacement message ready\r\n" % v, resp
        text = joined(await c.cmd("UID FETCH 7 BODY.PEEK[HEADER.FIELDS (X-Edited Subject)]"))
        assert b"X-Edited: yes\r\nSubject: happy new year !!" in text, text


async def test_into_another_mailbox_and_errors(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        await drafts(c, 2)
        await other.cmd("SELECT Sent")
        # §3.4: from Drafts into Sent (after submission): only the EXPUNGE shows here
        resp = await c.cmd(b"REPLACE 1 Sent " + literal(DRAFT + b"sent\r\n"))
        assert resp[0].startswith(b"* OK [APPENDUID ") and resp[1] == b"* 1 EXPUNGE\r\n", resp
        assert b"* 1 EXISTS" in joined(await other.cmd("NOOP"))
        # nothing changes after a refusal; the message is still there
        for command, answer in (
                (b"REPLACE 9 Drafts " + literal(DRAFT), b"NO No such message to replace"),
                (b"UID REPLACE 99 Drafts " + literal(DRAFT), b"NO No such message"),
                (b"REPLACE 1 Nope " + literal(DRAFT), b"NO [TRYCREATE]"),
                (b"REPLACE 0 Drafts " + literal(DRAFT), b"BAD"),
                (b"REPLACE 1 Drafts", b"BAD")):
            resp = await c.cmd(command)
            assert st(resp).startswith(answer), (command, resp)
        resp = await c.cmd("FETCH 1:* UID")
        assert [line for line in resp if line.startswith(b"* ")] == [b"* 1 FETCH (UID 2)\r\n"]
        # read-only: nothing can be expunged, so nothing is replaced (§3.2's NO)
        await c.cmd("EXAMINE Drafts")
        resp = await c.cmd(b"REPLACE 1 Drafts " + literal(DRAFT))
        assert st(resp).startswith(b"NO [READ-ONLY]"), resp
        # §3.5: selected state only
        await c.cmd("UNSELECT")
        resp = await c.cmd(b"REPLACE 1 Drafts " + literal(DRAFT))
        assert st(resp).startswith(b"BAD"), resp


async def test_quota_counts_the_net_growth_and_big_messages(imap_server: Server) -> None:
    store = imap_server.store
    async with connect(imap_server) as c:
        await c.login()
        await drafts(c, 1)
        account = await store.get_account("alice@example.test")
        assert account is not None
        used = await store.account_usage(account.id)
        await store.update_account("alice@example.test", quota_bytes=used + 10)
        bigger = DRAFT + b"v0\r\n" + b"12345678"  # 8 bytes more than the draft
        resp = await c.cmd(b"APPEND Drafts " + literal(bigger))
        assert st(resp).startswith(b"NO [OVERQUOTA]"), resp  # as an APPEND: no room
        resp = await c.cmd(b"REPLACE 1 Drafts " + literal(bigger))
        assert resp[-1].endswith(b" OK REPLACE completed\r\n"), resp  # net +8 fits
        resp = await c.cmd(b"REPLACE 1 Drafts " + literal(bigger + b"x" * 3))
        assert st(resp).startswith(b"NO [OVERQUOTA]"), resp
        assert b"(MESSAGES 1)" in joined(await c.cmd("STATUS Drafts (MESSAGES)"))
        await store.update_account("alice@example.test", quota_bytes=0)
        # a message over the spool threshold (64 KiB) arrives in a file, as APPEND's do
        big = DRAFT + b"y" * 200_000 + b"\r\n"
        resp = await c.cmd(b"REPLACE 1 Drafts " + literal(big), timeout=20)
        assert resp[-1].endswith(b" OK REPLACE completed\r\n"), resp
        text = joined(await c.cmd("FETCH 1 RFC822.SIZE"))
        assert b"RFC822.SIZE %d" % len(big) in text, text


async def test_imaplib_replaces_a_draft(imap_server: Server) -> None:
    port = imap_server.port("imap", "none")

    def run() -> tuple[str, list[Any], list[Any]]:
        imaplib.Commands.setdefault("REPLACE", ("SELECTED",))
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            imap.login("alice@example.test", "alice-pass")
            imap.append("Drafts", r"(\Draft)", None, DRAFT)
            imap.select("Drafts")
            # imaplib knows no REPLACE: its own helpers send one, the literal last
            setattr(imap, "literal", DRAFT + b"edited\r\n")  # noqa: B010
            command = getattr(imap, "_simple_command")  # noqa: B009
            typ, _ = command("REPLACE", "1", "Drafts", r"(\Draft \Seen)")
            uid = imap.response("OK")[1]
            _, body = imap.fetch("1", "(BODY.PEEK[TEXT])")
            return typ, uid, body
        finally:
            imap.logout()

    typ, appenduid, body = await asyncio.to_thread(run)
    assert typ == "OK"
    assert any(isinstance(x, bytes) and x.startswith(b"[APPENDUID ") for x in appenduid)
    assert b"edited" in repr(body).encode()
