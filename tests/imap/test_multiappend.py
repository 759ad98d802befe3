"""MULTIAPPEND (RFC 3502), with the RFC's example as a transcript."""

from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import connect, joined, st

M1 = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar "
      b"<foobar@Blurdybloop.example.COM>\r\nSubject: afternoon meeting\r\n"
      b"To: mooch@owatagu.example.net\r\nMessage-Id: <B27397-0100000@Blurdybloop.example.COM>\r\n"
      b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
      b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
M2 = (b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\nFrom: Joe Mooch "
      b"<mooch@OWaTaGu.example.net>\r\nSubject: Re: afternoon meeting\r\n"
      b"To: foobar@blurdybloop.example.com\r\nMessage-Id: <a0434793874930@OWaTaGu.example.net>\r\n"
      b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
      b"3:30 is fine with me.\r\n")


async def test_multiappend_rfc3502_example(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert b" MULTIAPPEND" in (await c.cmd("CAPABILITY"))[0]
        await c.cmd("CREATE saved-messages")
        # RFC 3502 §6.3.11: A003 APPEND saved-messages (\Seen) {329} ... (\Seen) " 1-Jul..."
        c.n += 1
        c.send(b"t%d APPEND saved-messages (\\Seen) {%d}\r\n" % (c.n, len(M1)))
        assert (await c.line()).startswith(b"+")
        c.send(M1 + b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(M2))
        assert (await c.line()).startswith(b"+")
        c.send(M2 + b"\r\n")
        resp = await c.read_response(f"t{c.n}")
        assert st(resp).startswith(b"OK [APPENDUID "), resp
        assert st(resp).split(b"]")[0].endswith(b" 1:2")
        resp = await c.cmd("EXAMINE saved-messages")
        assert b"* 2 EXISTS" in joined(resp)
        resp = await c.cmd("FETCH 1:2 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        text = joined(resp)
        assert text.count(b"\\Seen") == 2 and b'" 8-Feb-1994 06:43:04 +0000"' in text
        assert b"Re: afternoon meeting" in text
        # A004: a mailbox that does not exist: NO [TRYCREATE], nothing appended
        resp = await c.cmd(b"APPEND nowhere {%d+}\r\n%s {%d+}\r\n%s" % (len(M1), M1, len(M2), M2))
        assert b"NO [TRYCREATE]" in resp[-1]
        # an empty second message fails the whole command: the first is taken back
        resp = await c.cmd(b"APPEND saved-messages {%d+}\r\n%s {0+}\r\n" % (len(M1), M1))
        assert b"NO" in resp[-1]
        resp = await c.cmd("STATUS saved-messages (MESSAGES)")
        assert b"MESSAGES 2" in resp[0]
