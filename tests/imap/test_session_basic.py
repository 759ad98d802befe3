from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined


async def test_capability_login_select_fetch(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        resp = await c.cmd("CAPABILITY")
        assert b"IMAP4rev2" in resp[0] and b"AUTH=PLAIN" in resp[0]
        await c.login()
        resp = await c.cmd("CAPABILITY")
        assert b"MOVE" in resp[0] and b"APPENDLIMIT=" in resp[0]
        lit = b"APPEND INBOX (\\Flagged) {%d+}\r\n" % len(MESSAGE) + MESSAGE
        resp = await c.cmd(lit)
        assert b"OK [APPENDUID" in resp[-1], resp
        resp = await c.cmd("SELECT INBOX")
        text = joined(resp)
        assert b"* 1 EXISTS" in text and b"[READ-WRITE]" in resp[-1]
        resp = await c.cmd(
            "FETCH 1 (FLAGS UID RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        text = joined(resp)
        assert b"\\Flagged" in text and b"RFC822.SIZE %d" % len(MESSAGE) in text
        assert b'"Hello there"' in text and b"Subject: Hello there\r\n\r\n" in text
        assert b"\\Seen" not in text
        resp = await c.cmd("FETCH 1 BODY[TEXT]")
        text = joined(resp)
        assert b"Body text line one." in text and b"\\Seen" in text
        resp = await c.cmd("SEARCH SUBJECT hello")
        assert resp[0] == b"* SEARCH 1\r\n"
        resp = await c.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert b"\\Deleted" in resp[0]
        resp = await c.cmd("EXPUNGE")
        assert resp[0] == b"* 1 EXPUNGE\r\n", resp
        resp = await c.cmd("LOGOUT")
        assert resp[0].startswith(b"* BYE")
