"""CREATE-SPECIAL-USE (RFC 6154 §3), OBJECTID (RFC 8474), SAVEDATE (RFC 8514) and PREVIEW
(RFC 8970), with the RFCs' examples as transcripts where they apply."""

from __future__ import annotations

import re
import time

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, Client, connect, joined, st


async def append(c: Client, data: bytes = MESSAGE, box: str = "INBOX",
                 date: str = "") -> list[bytes]:
    return await c.cmd(f"APPEND {box} {date}".encode().rstrip()
                       + b" {%d+}\r\n" % len(data) + data)


async def test_create_special_use_rfc6154(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b"CREATE-SPECIAL-USE" in (await c.cmd("CAPABILITY"))[0]
        # RFC 6154 §5.3: C: t1 CREATE MySpecial (USE (\Drafts \Sent))
        resp = await c.cmd("CREATE MySpecial (USE (\\Drafts \\Sent))")
        assert b"NO [USEATTR]" in resp[-1]  # one use per mailbox here
        resp = await c.cmd("CREATE Stuff (USE (\\Important))")
        assert b"NO [USEATTR]" in resp[-1]
        resp = await c.cmd("CREATE MyArchive (USE (\\Archive))")
        assert st(resp).startswith(b"OK [MAILBOXID ("), resp
        resp = await c.cmd('LIST (SPECIAL-USE) "" "My*"')
        assert resp[0] == b'* LIST (\\HasNoChildren \\Archive) "/" MyArchive\r\n'


async def test_objectid_rfc8474(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" OBJECTID" in (await c.cmd("CAPABILITY"))[0]
        # §4.1: CREATE returns the MAILBOXID, RENAME keeps it, STATUS reports it
        resp = await c.cmd("CREATE foo")
        m = re.search(rb"\[MAILBOXID \(([\w-]+)\)\]", resp[-1])
        assert m is not None
        mbid = m.group(1)
        assert re.fullmatch(rb"[A-Za-z0-9_-]{1,255}", mbid)
        await c.cmd("RENAME foo bar")
        resp = await c.cmd("STATUS bar (MAILBOXID)")
        assert resp[0] == b"* STATUS bar (MAILBOXID (" + mbid + b"))\r\n"
        resp = await c.cmd("SELECT bar")
        assert b"* OK [MAILBOXID (" + mbid + b")]" in joined(resp)
        # §5: EMAILID is shared by copies, THREADID is NIL
        await append(c, box="bar")
        await c.cmd("COPY 1 INBOX")
        resp = await c.cmd("FETCH 1 (EMAILID THREADID)")
        m = re.search(rb"EMAILID \(([\w-]+)\)", resp[0])
        assert m is not None and b"THREADID NIL" in resp[0]
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1 (EMAILID)")
        assert b"EMAILID (" + m.group(1) + b")" in resp[0]
        resp = await c.cmd(b"SEARCH EMAILID " + m.group(1))
        assert resp[0] == b"* SEARCH 1\r\n"
        resp = await c.cmd("SEARCH THREADID T1")
        assert resp[0] == b"* SEARCH\r\n"
        # a new mailbox of the same name gets a new MAILBOXID
        await c.cmd("DELETE bar")
        resp = await c.cmd("CREATE bar")
        assert mbid not in resp[-1]


async def test_savedate_rfc8514(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" SAVEDATE" in (await c.cmd("CAPABILITY"))[0]
        resp = await append(c, date='"01-Jan-2000 10:00:00 +0000"')
        assert st(resp).startswith(b"OK")
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1 (INTERNALDATE SAVEDATE)")
        assert b'INTERNALDATE " 1-Jan-2000' in resp[0]
        year = time.gmtime().tm_year
        assert b"SAVEDATE \"" in resp[0] and b"-%d " % year in resp[0].split(b"SAVEDATE")[1]
        today = time.strftime("%d-%b-%Y", time.gmtime())
        assert (await c.cmd(f"SEARCH SAVEDON {today}"))[0] == b"* SEARCH 1\r\n"
        assert (await c.cmd("SEARCH SAVEDBEFORE 1-Jan-2001"))[0] == b"* SEARCH\r\n"
        assert (await c.cmd("SEARCH SAVEDSINCE 1-Jan-2001"))[0] == b"* SEARCH 1\r\n"
        assert (await c.cmd("SEARCH SAVEDATESUPPORTED"))[0] == b"* SEARCH 1\r\n"
        assert (await c.cmd("SEARCH BEFORE 1-Jan-2001"))[0] == b"* SEARCH 1\r\n"


async def test_preview_rfc8970(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" PREVIEW" in (await c.cmd("CAPABILITY"))[0]
        html = (b"From: a@example.test\r\nSubject: h\r\nContent-Type: text/html\r\n\r\n"
                b"<html><body><p>Hello   <b>world</b></p></body></html>\r\n")
        long_text = b"Subject: long\r\n\r\n" + b"word " * 300
        for data in (MESSAGE, html, long_text):
            await append(c, data)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1:3 (PREVIEW)")
        text = joined(resp)
        assert b'* 1 FETCH (PREVIEW "Body text line one.")' in text
        assert b'* 2 FETCH (PREVIEW "Hello world")' in text
        m = re.search(rb'\* 3 FETCH \(PREVIEW "([^"]*)"\)', text)
        assert m is not None and len(m.group(1)) <= 256
        # §3.1: PREVIEW (LAZY) may return NIL; we compute it at once
        resp = await c.cmd("FETCH 1 (PREVIEW (LAZY))")
        assert b'PREVIEW "Body text line one."' in resp[0]
        resp = await c.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        assert b"\\Seen" not in joined(resp)


async def test_append_binary_rfc3516_4_3(imap_server: Server) -> None:
    """imaptest's append-binary: a part APPENDed with NUL octets (literal8) is served by
    BODY[1] converted (base64), by BINARY[1] as it was."""
    msg = (b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
           b"\r\n\x00-\x01\r\n\r\n")
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd(b"APPEND INBOX ~{%d+}\r\n" % len(msg) + msg)
        assert st(resp).startswith(b"OK")
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1 (BODY.PEEK[1])")
        assert b"\x00" not in joined(resp) and b"AC0BDQoNCg==" in joined(resp)
        c.n += 1
        c.send(b"t%d FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n" % c.n)
        data = b""
        while b"t%d OK" % c.n not in data:
            data += await c.reader.read(4096)
        assert b"BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n\x00-\x01\r\n\r\n" in data
