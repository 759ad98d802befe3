"""CATENATE (RFC 4469) with relative IMAP URLs, the RFC's §5 example as a transcript."""

from __future__ import annotations

import re

from tests.conftest import Server
from tests.imap.helpers import connect, joined, st

DRAFT = (b"Subject: Draft\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n"
         b"--=_b\r\nContent-Type: text/plain\r\n\r\nThe first part.\r\n"
         b"--=_b\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n--=_b--\r\n")


async def test_catenate_rfc4469_example(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" CATENATE" in (await c.cmd("CAPABILITY"))[0]
        resp = await c.cmd(b"APPEND Drafts {%d+}\r\n" % len(DRAFT) + DRAFT)
        m = re.search(rb"APPENDUID (\d+) (\d+)", resp[-1])
        assert m is not None
        v, u = m.group(1).decode(), m.group(2).decode()
        base = f"/Drafts;UIDVALIDITY={v}/;UID={u}"
        # §5: a new message from the draft's header and parts, with new text between
        text1 = b"--------------030308070208000400050907\r\n"
        resp = await c.cmd(
            f'APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL "{base}/;section=HEADER" '
            f'TEXT {{{len(text1)}+}}\r\n'.encode() + text1
            + f' URL "{base}/;section=1.MIME" URL "{base}/;section=1" TEXT {{2+}}\r\n\r\n'
              f' URL "imap://alice@mail.example.test{base}/;section=2/;partial=0.2")'.encode())
        assert st(resp).startswith(b"OK [APPENDUID"), resp
        await c.cmd("SELECT Drafts")
        resp = await c.cmd("FETCH 2 (FLAGS BODY.PEEK[])")
        text = joined(resp)
        assert b"$MDNSent" in text and b"\\Draft" in text
        assert (b"Subject: Draft\r\n" in text and text1 + b"Content-Type: text/plain\r\n\r\n"
                + b"The first part.\r\nAA)" in text), text
        # a wrong UIDVALIDITY, a missing UID: NO [BADURL ...], nothing appended
        resp = await c.cmd(f'APPEND Drafts CATENATE (URL "/Drafts;UIDVALIDITY=1/;UID={u}")')
        assert b"NO [BADURL /Drafts;UIDVALIDITY=1/;UID=" in resp[-1]
        resp = await c.cmd('APPEND Drafts CATENATE (TEXT {3+}\r\nab\n URL "/Drafts/;UID=99")')
        assert b"NO [BADURL" in resp[-1]
        resp = await c.cmd(f'APPEND Nowhere CATENATE (URL "{base}")')
        assert b"NO [TRYCREATE]" in resp[-1]
        resp = await c.cmd("STATUS Drafts (MESSAGES)")
        assert b"MESSAGES 2" in resp[0]
        # with MULTIAPPEND: two CATENATEd messages at once
        resp = await c.cmd(f'APPEND Drafts CATENATE (URL "{base}/;section=1") '
                           f'CATENATE (URL "{base}/;section=HEADER")')
        assert st(resp).startswith(b"OK [APPENDUID"), resp
