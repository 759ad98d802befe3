"""METADATA (RFC 5464), with the RFC's examples as transcripts where they apply."""

from __future__ import annotations

import pytest

from tests.conftest import Instance, Server
from tests.imap.helpers import connect, joined, st
from tests.imap.test_metadata_server import admin_config, pochta


async def test_metadata_rfc5464_examples(instance: Instance, imap_server: Server,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd("CAPABILITY")
        assert b" METADATA" in resp[0]
        # §4.4.1 example: SETMETADATA INBOX (/private/comment {33} ...) with a literal
        comment = b"My new comment across two lines."
        resp = await c.cmd(b'SETMETADATA INBOX (/private/comment {%d+}\r\n' % len(comment)
                           + comment + b")")
        assert st(resp).startswith(b"OK"), resp
        # §4.2.1: GETMETADATA "" /private/comment on the server: nothing there yet
        resp = await c.cmd('GETMETADATA "" /private/comment')
        assert resp[0].startswith(b"t") and st(resp).startswith(b"OK")
        resp = await c.cmd("GETMETADATA INBOX /private/comment")
        assert resp[0] == (b'* METADATA INBOX (/private/comment '
                           b'"My new comment across two lines.")\r\n')
        # §4.4.2: delete with NIL
        resp = await c.cmd("SETMETADATA INBOX (/private/comment NIL)")
        assert st(resp).startswith(b"OK")
        resp = await c.cmd("GETMETADATA INBOX /private/comment")
        assert len(resp) == 1 and st(resp).startswith(b"OK")
        # §4.4.3: several entries; §4.2.2 MAXSIZE; §4.2.3 DEPTH
        resp = await c.cmd('SETMETADATA INBOX (/shared/comment "Shared comment" '
                           '/private/comment "My comment" /shared/vendor/a/b "x" '
                           '/shared/vendor/a "y")')
        assert st(resp).startswith(b"OK")
        resp = await c.cmd("GETMETADATA INBOX (/shared/comment /private/comment)")
        assert resp[0] == (b'* METADATA INBOX (/private/comment "My comment" '
                           b'/shared/comment "Shared comment")\r\n')
        resp = await c.cmd("GETMETADATA (MAXSIZE 10) INBOX (/shared/comment /private/comment)")
        assert resp[0] == b'* METADATA INBOX (/private/comment "My comment")\r\n'
        assert b"OK [METADATA LONGENTRIES 14]" in resp[-1]
        resp = await c.cmd("GETMETADATA (DEPTH 1) INBOX /shared/vendor")
        assert resp[0] == b'* METADATA INBOX (/shared/vendor/a "y")\r\n'
        resp = await c.cmd("GETMETADATA (DEPTH infinity) INBOX /shared/vendor")
        assert resp[0] == b'* METADATA INBOX (/shared/vendor/a "y" /shared/vendor/a/b "x")\r\n'
        # server entries with mailbox "": /shared ones are the administrator's (NOPERM
        # here; test_metadata_server.py), /private ones the user's own
        resp = await c.cmd('SETMETADATA "" (/shared/admin "mailto:admin@example.test")')
        assert st(resp).startswith(b"NO [NOPERM]"), resp
        resp = await c.cmd('SETMETADATA "" (/private/comment "my server note")')
        assert st(resp).startswith(b"OK"), resp
        assert await pochta(monkeypatch, admin_config(instance), "metadata", "set",
                            "/shared/admin", "mailto:admin@example.test") == 0
        resp = await c.cmd('GETMETADATA "" (/shared/admin /private/comment)')
        assert resp[0] == (b'* METADATA "" (/private/comment "my server note" '
                           b'/shared/admin "mailto:admin@example.test")\r\n'), resp


async def test_metadata_errors_and_privacy(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd("GETMETADATA Nope /private/comment")
        assert b"NO [NONEXISTENT]" in resp[-1]
        resp = await c.cmd("SETMETADATA INBOX (/other/x \"v\")")
        assert b"BAD" in resp[-1]
        resp = await c.cmd("SETMETADATA INBOX (/private/a* \"v\")")
        assert b"BAD" in resp[-1]
        big = b"x" * 70000
        c.n += 1
        c.send(b"t%d SETMETADATA INBOX (/private/big {%d}\r\n" % (c.n, len(big)))
        resp = await c.read_response(f"t{c.n}")
        assert b"BAD [TOOBIG]" in resp[-1]  # the literal cap refuses it before upload
        values = " ".join(f'/private/e{n} "v"' for n in range(101))
        resp = await c.cmd(f"SETMETADATA INBOX ({values})")
        assert b"NO [METADATA TOOMANY]" in resp[-1]
        resp = await c.cmd('SETMETADATA INBOX (/private/mine "secret" /shared/pub "open")')
        assert st(resp).startswith(b"OK")
    async with connect(imap_server) as bob:
        await bob.login("bob@example.test", "bob-pass")
        # bob has his own INBOX: alice's entries are not his
        resp = await bob.cmd("GETMETADATA INBOX (/private/mine /shared/pub)")
        assert b"secret" not in joined(resp) and b"open" not in joined(resp)


async def test_list_return_metadata_rfc9590(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as bob:
        await c.login()
        await bob.login("bob@example.test", "bob-pass")
        assert b" LIST-METADATA" in (await c.cmd("CAPABILITY"))[0]
        await c.cmd('SETMETADATA INBOX (/shared/color "#ff0000" /private/comment "inbox" '
                    '/shared/other "not asked")')
        await c.cmd("CREATE Lists")
        await c.cmd("CREATE Plain")
        await c.cmd('SETMETADATA Lists (/shared/color "blue")')
        # a mailbox bob shares: listed, but its entries are bob's (not reachable here)
        await bob.cmd("SETACL INBOX alice@example.test lr")
        await bob.cmd('SETMETADATA INBOX (/shared/color "bob\'s")')
        resp = await c.cmd('LIST "" (INBOX Lists Plain "Other Users/*") RETURN (MYRIGHTS '
                           'METADATA (/shared/color /private/comment))')
        assert resp[:-1] == [
            b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
            b"* MYRIGHTS INBOX aeiklprstwx\r\n",
            b'* METADATA INBOX (/private/comment "inbox" /shared/color "#ff0000")\r\n',
            b'* LIST (\\HasNoChildren) "/" Lists\r\n',
            b"* MYRIGHTS Lists aeiklprstwx\r\n",
            b'* METADATA Lists (/shared/color "blue")\r\n',
            b'* LIST (\\HasNoChildren) "/" "Other Users/bob@example.test/INBOX"\r\n',
            b'* MYRIGHTS "Other Users/bob@example.test/INBOX" lr\r\n',
            b'* LIST (\\HasNoChildren) "/" Plain\r\n',
            b"* MYRIGHTS Plain aeiklprstwx\r\n",
        ], resp
        # one entry without parentheses; an invalid entry name is a BAD (RFC 5464 §3.2)
        resp = await c.cmd('LIST "" "L*" RETURN (METADATA /shared/color)')
        assert resp[1] == b'* METADATA Lists (/shared/color "blue")\r\n', resp
        resp = await c.cmd('LIST "" "*" RETURN (METADATA (/shared/a*))')
        assert st(resp).startswith(b"BAD"), resp
