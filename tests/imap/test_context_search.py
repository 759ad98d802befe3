"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (UPDATE), ADDTO/REMOVEFROM, CANCELUPDATE."""

from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined


async def test_search_update_transcript(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        assert b" CONTEXT=SEARCH" in (await c.cmd("CAPABILITY"))[0]
        for _ in range(5):
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        await c.cmd("SELECT INBOX")
        await c.cmd("STORE 1,2 +FLAGS (\\Seen)")
        resp = await c.cmd("SEARCH RETURN (UPDATE ALL) SEEN")
        assert resp[0] == b'* ESEARCH (TAG "t10") ALL 1:2\r\n', resp
        resp = await c.cmd("STORE 3:5 +FLAGS.SILENT (\\Seen)")
        assert b'* ESEARCH (TAG "t10") ADDTO (0 3:5)\r\n' in joined(resp), resp
        resp = await c.cmd("STORE 1:5 -FLAGS.SILENT (\\Seen)")
        assert b'* ESEARCH (TAG "t10") REMOVEFROM (0 1:5)\r\n' in joined(resp), resp
        # UID searches report UIDs; changes by another session arrive at the next sync
        resp = await c.cmd("UID SEARCH RETURN (UPDATE) BODY body")
        assert resp[0] == b'* ESEARCH (TAG "t13") UID\r\n', resp
        await other.cmd("SELECT INBOX")
        await other.cmd("STORE 2 +FLAGS (\\Seen \\Deleted)")
        resp = await c.cmd("NOOP")
        assert b'* ESEARCH (TAG "t10") ADDTO (0 2)\r\n' in joined(resp), resp
        await other.cmd("EXPUNGE")
        text = joined(await c.cmd("NOOP"))
        assert b'* ESEARCH (TAG "t10") REMOVEFROM (0 2)\r\n' in text, text
        assert b'* ESEARCH (TAG "t13") UID REMOVEFROM (0 2)\r\n' in text, text
        # REMOVEFROM comes before the EXPUNGE that renumbers
        assert text.index(b"REMOVEFROM (0 2)") < text.index(b"* 2 EXPUNGE")
        text = joined(await c.cmd(b"APPEND INBOX (\\Seen) {%d+}\r\n" % len(MESSAGE) + MESSAGE))
        assert b'* ESEARCH (TAG "t10") ADDTO (0 5)\r\n' in text, text
        assert b'* ESEARCH (TAG "t13") UID ADDTO (0 6)\r\n' in text, text
        resp = await c.cmd('CANCELUPDATE "t10" "t13"')
        assert resp[-1].endswith(b"OK CANCELUPDATE completed\r\n")
        text = joined(await c.cmd("STORE 1 +FLAGS (\\Seen)"))
        assert b"ESEARCH" not in text
