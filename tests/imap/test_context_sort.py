"""CONTEXT=SORT (RFC 5267 §4): SORT RETURN (UPDATE) keeps a sorted result up to date with
positioned ADDTO / REMOVEFROM, and CANCELUPDATE stops it."""

from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import connect, joined


def _msg(subject: str) -> bytes:
    return (b"From: a@example.test\r\nSubject: " + subject.encode()
            + b"\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nbody\r\n")


async def test_sort_update_positions(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        assert b" CONTEXT=SORT" in (await c.cmd("CAPABILITY"))[0]
        for subject in ("b", "d", "f"):
            m = _msg(subject)
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("UID SORT RETURN (UPDATE ALL) (SUBJECT) US-ASCII ALL")
        t1 = b"t%d" % c.n
        assert resp[0] == b'* ESEARCH (TAG "%s") UID ALL 1:3\r\n' % t1, resp
        # "a" sorts first, "e" between "d" and "f": each gets its position in the result
        await other.cmd("SELECT INBOX")
        for subject in ("e", "a"):
            m = _msg(subject)
            await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
        text = joined(await c.cmd("NOOP"))
        assert b'* ESEARCH (TAG "%s") UID ADDTO (1 5 4 4)\r\n' % t1 in text, text
        # result now a(5) b(1) d(2) e(4) f(3); expunging d and f removes positions 5, 3
        await other.cmd("UID STORE 2,3 +FLAGS.SILENT (\\Deleted)")
        await other.cmd("EXPUNGE")
        text = joined(await c.cmd("NOOP"))
        assert b'* ESEARCH (TAG "%s") UID REMOVEFROM (5 3 3 2)\r\n' % t1 in text, text
        assert text.index(b"REMOVEFROM") < text.index(b"EXPUNGE")
        # a sequence-number context whose key is a flag: messages leave and join it
        resp = await c.cmd("SORT RETURN (UPDATE) (REVERSE SUBJECT) US-ASCII UNSEEN")
        t2 = b"t%d" % c.n
        assert resp[0] == b'* ESEARCH (TAG "%s")\r\n' % t2, resp  # e(3) b(1) a(2) now
        text = joined(await c.cmd("STORE 1 +FLAGS.SILENT (\\Seen)"))
        assert b'* ESEARCH (TAG "%s") REMOVEFROM (2 1)\r\n' % t2 in text, text
        text = joined(await c.cmd("STORE 1 -FLAGS.SILENT (\\Seen)"))
        assert b'* ESEARCH (TAG "%s") ADDTO (2 1)\r\n' % t2 in text, text
        resp = await c.cmd(b'CANCELUPDATE "%s" "%s"' % (t1, t2))
        assert resp[-1].endswith(b"OK CANCELUPDATE completed\r\n")
        m = _msg("c")
        text = joined(await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m))
        assert b"ESEARCH" not in text, text


async def test_sort_partial_with_context(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        for subject in ("c", "a", "b"):
            m = _msg(subject)
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("SORT RETURN (CONTEXT PARTIAL 1:2) (SUBJECT) UTF-8 ALL")
        assert resp[0] == b'* ESEARCH (TAG "t%d") PARTIAL (1:2 2:3)\r\n' % c.n, resp


async def test_sort_update_of_a_mailbox_sorted_by_the_store(imap_server: Server) -> None:
    """SORT RETURN (UPDATE) ... ALL once the keys are kept (the store sorts, and the
    answer is kept for the view): the context starts from that order, by UID and by
    sequence number, and follows arrivals."""
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        for subject in ("d", "b", "f"):
            m = _msg(subject)
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
        await c.cmd("SELECT INBOX")
        assert (await c.cmd("SORT (SUBJECT) US-ASCII ALL"))[0] == b"* SORT 2 1 3\r\n"
        assert (await c.cmd("SORT (SUBJECT) US-ASCII ALL"))[0] == b"* SORT 2 1 3\r\n"
        resp = await c.cmd("SORT RETURN (UPDATE ALL) (SUBJECT) US-ASCII ALL")
        t1 = b"t%d" % c.n
        assert resp[0] == b'* ESEARCH (TAG "%s") ALL 2,1,3\r\n' % t1, resp
        resp = await c.cmd("UID SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) US-ASCII ALL")
        t2 = b"t%d" % c.n
        assert resp[0] == b'* ESEARCH (TAG "%s") UID ALL 3,1:2\r\n' % t2, resp
        await other.cmd("SELECT INBOX")
        m = _msg("e")
        await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
        text = joined(await c.cmd("NOOP"))
        # b d e f: "e" is third; reversed f e d b: second
        assert b'* ESEARCH (TAG "%s") ADDTO (3 4)\r\n' % t1 in text, text
        assert b'* ESEARCH (TAG "%s") UID ADDTO (2 4)\r\n' % t2 in text, text
