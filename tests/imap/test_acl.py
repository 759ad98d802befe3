"""ACL (RFC 4314), LIST-MYRIGHTS (RFC 8440) and shared mailboxes in the "Other Users"
namespace (RFC 2342), over real sockets: nobody sees another user's mail, or learns that
a mailbox exists, without a grant; each right allows exactly its commands."""

from __future__ import annotations

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, Client, connect, joined, st

SHARED = '"Other Users/alice@example.test/INBOX"'
TEAM = '"Other Users/alice@example.test/Team"'


async def _append(c: Client, box: str = "INBOX") -> list[bytes]:
    return await c.cmd(f"APPEND {box} {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE)


async def test_nothing_of_another_user_without_a_grant(imap_server: Server) -> None:
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        await _append(alice)
        await _append(bob)
        assert st(await alice.cmd("CREATE Team")).startswith(b"OK")
        listing = joined(await bob.cmd('LIST "" "*"'))
        assert b"alice" not in listing and b"Other Users" not in listing, listing
        for box in (SHARED, TEAM, '"Other Users/alice@example.test/Nope"'):
            # an existing mailbox without a grant looks exactly like a missing one
            for cmd in (f"SELECT {box}", f"EXAMINE {box}", f"STATUS {box} (MESSAGES)",
                        f"MYRIGHTS {box}", f"GETACL {box}", f"SETACL {box} bob@example.test lr",
                        f"DELETE {box}", f"SUBSCRIBE {box}"):
                assert st(await bob.cmd(cmd)).startswith(b"NO [NONEXISTENT]"), cmd
            assert st(await _append(bob, box)).startswith(b"NO [TRYCREATE]")
        for box in ('"Other Users"', '"Other Users/alice@example.test"',
                    '"Other Users/bob@example.test/INBOX"'):
            assert st(await bob.cmd(f"SELECT {box}")).startswith(b"NO"), box
        await bob.cmd("SELECT INBOX")
        assert st(await bob.cmd(f"COPY 1 {SHARED}")).startswith(b"NO [TRYCREATE]")
        assert st(await bob.cmd(f"MOVE 1 {SHARED}")).startswith(b"NO [TRYCREATE]")
        assert st(await bob.cmd(f"CREATE {TEAM[:-1]}/Sub\"")).startswith(b"NO")
        assert st(await bob.cmd(f"RENAME {SHARED} Mine")).startswith(b"NO")
        # alice's mailbox is untouched: one message, nothing else
        text = joined(await alice.cmd("STATUS INBOX (MESSAGES)"))
        assert b"(MESSAGES 1)" in text, text


async def test_read_grant_then_insert_and_seen_then_revoke(imap_server: Server) -> None:
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        await _append(alice)
        await alice.cmd("EXAMINE INBOX")
        caps = (await bob.cmd("CAPABILITY"))[0]
        assert b" ACL " in caps and b" RIGHTS=texk" in caps and b" LIST-MYRIGHTS" in caps
        resp = await alice.cmd("SETACL INBOX bob@example.test lr")
        assert st(resp) == b"OK SETACL completed\r\n", resp
        text = joined(await alice.cmd("GETACL INBOX"))
        assert b"* ACL INBOX alice@example.test aeiklprstwx bob@example.test lr\r\n" in text
        text = joined(await alice.cmd("LISTRIGHTS INBOX bob@example.test"))
        assert b'* LISTRIGHTS INBOX bob@example.test "" l r s w i p k x t e a\r\n' in text
        # bob lists, sees his rights, and reads, but changes nothing
        text = joined(await bob.cmd('LIST "" "*" RETURN (MYRIGHTS)'))
        assert b'* LIST (\\HasNoChildren) "/" "Other Users/alice@example.test/INBOX"' in text
        assert b'* MYRIGHTS "Other Users/alice@example.test/INBOX" lr\r\n' in text, text
        assert b"* MYRIGHTS INBOX aeiklprstwx\r\n" in text
        text = joined(await bob.cmd('LIST "" "Other Users/%"'))
        assert b'(\\Noselect \\HasChildren) "/" "Other Users/alice@example.test"' in text
        text = joined(await bob.cmd("NAMESPACE"))
        assert b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Public/" "/"))' in text
        resp = await bob.cmd(f"SELECT {SHARED}")
        assert st(resp).startswith(b"OK [READ-ONLY]"), resp
        text = joined(await bob.cmd("FETCH 1 BODY[]"))
        assert MESSAGE in text
        assert b"\\Seen" not in joined(await alice.cmd("FETCH 1 FLAGS"))  # no s: unchanged
        assert st(await bob.cmd("STORE 1 +FLAGS (\\Seen)")).startswith(b"NO")
        assert st(await _append(bob, SHARED)).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd(f"GETACL {SHARED}")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd(f"SETACL {SHARED} bob@example.test +a")).startswith(
            b"NO [NOPERM]")
        assert joined(await bob.cmd(f"MYRIGHTS {SHARED}")).startswith(
            b'* MYRIGHTS "Other Users/alice@example.test/INBOX" lr\r\n')
        # more rights: insert and seen, still no deleting
        await alice.cmd("SETACL INBOX bob@example.test +is")
        resp = await bob.cmd(f"SELECT {SHARED}")
        assert b"OK [READ-WRITE]" in joined(resp), resp
        assert st(await bob.cmd("STORE 1 +FLAGS (\\Seen)")).startswith(b"OK")
        assert st(await bob.cmd("STORE 1 +FLAGS (\\Flagged)")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd("STORE 1 +FLAGS (\\Deleted)")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd("STORE 1 FLAGS (\\Seen)")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd("EXPUNGE")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd("MOVE 1 INBOX")).startswith(b"NO [NOPERM]")
        assert st(await bob.cmd("COPY 1 INBOX")).startswith(b"OK")  # to his own INBOX
        resp = await _append(bob, SHARED)
        assert st(resp).startswith(b"OK [APPENDUID"), resp
        text = joined(await alice.cmd("FETCH 1:* (FLAGS)"))  # bob's \Seen and APPEND
        assert b"\\Seen))" in text and b"* 2 EXISTS" in text, text
        # revoked: gone again for the next SELECT (a session keeps the rights it
        # selected with until it selects again)
        assert st(await alice.cmd("DELETEACL INBOX bob@example.test")).startswith(b"OK")
        assert st(await bob.cmd(f"SELECT {SHARED}")).startswith(b"NO [NONEXISTENT]")
        assert b"alice" not in joined(await bob.cmd('LIST "" "*"'))


async def test_anyone_create_delete_and_acl_follows_rename(imap_server: Server) -> None:
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        await alice.cmd("CREATE Team")
        assert st(await alice.cmd("SETACL Team anyone lrk")).startswith(b"OK")
        assert st(await alice.cmd("SETACL Team alice@example.test l")).startswith(b"NO")
        assert st(await alice.cmd("SETACL Team -alice@example.test l")).startswith(b"NO")
        assert st(await alice.cmd("SETACL Team --bob@example.test r")).startswith(b"BAD")
        assert st(await alice.cmd("SETACL Team bob@example.test q")).startswith(b"BAD")
        assert st(await bob.cmd('CREATE "Other Users/alice@example.test/Team/Sub"')
                  ).startswith(b"OK")
        assert b'"/" Team/Sub' in joined(await alice.cmd('LIST "" "*"'))
        # the child has no grant of its own: bob does not see it, nor delete it
        sub = '"Other Users/alice@example.test/Team/Sub"'
        assert st(await bob.cmd(f"DELETE {sub}")).startswith(b"NO [NONEXISTENT]")
        assert st(await bob.cmd(f"DELETE {TEAM}")).startswith(b"NO [NOPERM]")
        await alice.cmd("SETACL Team anyone +x")
        await alice.cmd("RENAME Team/Sub Crew")
        assert st(await alice.cmd("RENAME Team Squad")).startswith(b"OK")
        squad = '"Other Users/alice@example.test/Squad"'
        assert b"Squad" in joined(await bob.cmd(f"MYRIGHTS {squad}"))
        assert st(await bob.cmd(f"DELETE {squad}")).startswith(b"OK")
        assert b"Squad" not in joined(await alice.cmd('LIST "" "*"'))


async def test_negative_rights(imap_server: Server) -> None:
    """RFC 4314 §2: ``-identifier`` rights are taken from the union of the positive
    grants. Granted to every user (``authenticated``), then taken from bob: he keeps
    only what is left, and without ``l`` and ``r`` the mailbox is gone for him."""
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        await alice.cmd("CREATE Team")
        await _append(alice, "Team")
        assert st(await alice.cmd("SETACL Team authenticated lrsw")).startswith(b"OK")
        assert st(await alice.cmd("SETACL Team -bob@example.test sw")).startswith(b"OK")
        resp = await alice.cmd("GETACL Team")
        assert resp[0] == (b"* ACL Team alice@example.test aeiklprstwx "
                           b"-bob@example.test sw authenticated lrsw\r\n"), resp
        resp = await bob.cmd(f"MYRIGHTS {TEAM}")
        assert resp[0] == b"* MYRIGHTS " + TEAM.encode() + b" lr\r\n", resp
        resp = await bob.cmd(f"SELECT {TEAM}")
        assert b"[READ-ONLY]" in joined(resp), resp  # no s, t, w, i, e left
        assert st(await bob.cmd("STORE 1 +FLAGS (\\Flagged)")).startswith(b"NO [READ-ONLY]")
        assert st(await bob.cmd("UNSELECT")).startswith(b"OK")
        # every right taken: the mailbox no longer exists for bob
        assert st(await alice.cmd("SETACL Team -bob@example.test +lr")).startswith(b"OK")
        assert b"Team" not in joined(await bob.cmd('LIST "" "*"'))
        assert st(await bob.cmd(f"SELECT {TEAM}")).startswith(b"NO [NONEXISTENT]")
        # and given back by removing the negative grant
        assert st(await alice.cmd("DELETEACL Team -bob@example.test")).startswith(b"OK")
        resp = await bob.cmd(f"MYRIGHTS {TEAM}")
        assert resp[0] == b"* MYRIGHTS " + TEAM.encode() + b" lrsw\r\n", resp


async def test_groups_an_alias_and_a_domain(imap_server: Server) -> None:
    """A team inbox shared once with an alias: whoever the alias lists has the rights
    (from their next login), and ``@domain`` grants every account of the domain."""
    store = imap_server.store
    async with connect(imap_server) as alice:
        await alice.login()
        await alice.cmd("CREATE Team")
        await _append(alice, "Team")
        assert st(await alice.cmd("SETACL Team team@example.test lrs")).startswith(b"OK")
        async with connect(imap_server) as bob:  # not in the team yet
            await bob.login("bob@example.test", "bob-pass")
            assert b"Team" not in joined(await bob.cmd('LIST "" "*"'))
            assert st(await bob.cmd(f"SELECT {TEAM}")).startswith(b"NO [NONEXISTENT]")
        await store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
        async with connect(imap_server) as bob:
            await bob.login("bob@example.test", "bob-pass")
            listing = joined(await bob.cmd('LIST "" "*"'))
            assert TEAM.encode() in listing, listing
            resp = await bob.cmd(f"MYRIGHTS {TEAM}")
            assert resp[0] == b"* MYRIGHTS " + TEAM.encode() + b" lrs\r\n", resp
            assert b"* 1 EXISTS" in joined(await bob.cmd(f"SELECT {TEAM}"))
            # a negative grant to the group takes a right from every member
            assert st(await alice.cmd("SETACL Team -team@example.test s")).startswith(b"OK")
            resp = await bob.cmd(f"MYRIGHTS {TEAM}")
            assert resp[0] == b"* MYRIGHTS " + TEAM.encode() + b" lr\r\n", resp
        await store.remove_alias("team@example.test")
        await store.add_alias("team@example.test", ["alice@example.test"])
        assert st(await alice.cmd("DELETEACL Team -team@example.test")).startswith(b"OK")
        async with connect(imap_server) as bob:  # out of the team: nothing left
            await bob.login("bob@example.test", "bob-pass")
            assert b"Team" not in joined(await bob.cmd('LIST "" "*"'))
            # the domain group
            assert st(await alice.cmd("SETACL Team @example.test lr")).startswith(b"OK")
            text = joined(await alice.cmd("GETACL Team"))
            assert b" @example.test lr" in text, text
        async with connect(imap_server) as bob:
            await bob.login("bob@example.test", "bob-pass")
            resp = await bob.cmd(f"MYRIGHTS {TEAM}")
            assert resp[0] == b"* MYRIGHTS " + TEAM.encode() + b" lr\r\n", resp
            assert st(await bob.cmd("SETACL Team @ lr")).startswith(b"BAD")
