"""UIDONLY (RFC 9586), the RFC's examples as transcripts where they apply."""

from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined


async def test_uidonly_rfc9586(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        assert b" UIDONLY" in (await c.cmd("CAPABILITY"))[0]
        for _ in range(3):
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        resp = await c.cmd("ENABLE UIDONLY IMAP4rev2")
        assert resp[0] == b"* ENABLED UIDONLY IMAP4rev2\r\n"
        await c.cmd("SELECT INBOX")
        # §3: commands with message sequence numbers are refused
        for cmd in ("FETCH 1:* (FLAGS)", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL",
                    "COPY 1 Trash", "MOVE 1 Trash", "UID SEARCH 1:2",
                    "SORT (DATE) UTF-8 ALL"):
            resp = await c.cmd(cmd)
            assert b"BAD [UIDREQUIRED]" in resp[-1], (cmd, resp)
        # §3.3: UIDFETCH responses carry the UID as their number, no UID item
        resp = await c.cmd("UID FETCH 1:* (FLAGS)")
        assert resp[:3] == [b"* 1 UIDFETCH (FLAGS ())\r\n", b"* 2 UIDFETCH (FLAGS ())\r\n",
                            b"* 3 UIDFETCH (FLAGS ())\r\n"], resp
        resp = await c.cmd("UID STORE 2 +FLAGS (\\Flagged)")
        assert resp[0] == b"* 2 UIDFETCH (FLAGS (\\Flagged))\r\n", resp
        resp = await c.cmd("UID FETCH 1 (UID RFC822.SIZE)")
        assert resp[0] == b"* 1 UIDFETCH (RFC822.SIZE %d)\r\n" % len(MESSAGE), resp
        # §3.4: expunges are announced with VANISHED, also another session's
        await other.cmd("SELECT INBOX")
        await other.cmd("STORE 1 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        resp = await c.cmd("NOOP")
        assert b"* VANISHED 1\r\n" in joined(resp) and b"EXPUNGE" not in joined(resp), resp
        resp = await c.cmd("UID SEARCH ALL")
        assert resp[0] in (b"* SEARCH 2 3\r\n",) or b"ALL 2:3" in resp[0], resp
        resp = await c.cmd("UID EXPUNGE 3")
        assert b"OK" in resp[-1]
