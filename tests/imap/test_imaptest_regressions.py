"""Regressions found by Dovecot's imaptest compliance scripts (one test per fix)."""

from __future__ import annotations

import re

from pochta.proto.imap.bodystructure import decode_qp, envelope, parse, section_bytes
from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import Reader
from pochta.proto.imap.search import Candidate, SearchContext, matches, parse_search
from pochta.storage.interfaces import MessageMeta
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined, st

FOLDED_BOUNDARY = (
    b"From: user@domain.org\r\n"
    b"Mime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n'
    b"\r\n"
    b"prologue\r\n"
    b"\r\n"
    b"--foo bar\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"\r\n"
    b"--foo bar--\r\n"
)


def test_folded_boundary_is_unfolded() -> None:
    """imaptest fetch-body-mime: a boundary parameter folded inside its quotes."""
    root = parse(FOLDED_BOUNDARY)
    assert root.is_multipart and len(root.children) == 1
    assert section_bytes(root, (1,), "") == b"hello\r\n"


TOP_RFC822 = (
    b"From: user@domain.org\r\n"
    b"Mime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: sub@domain.org\r\n"
    b"Subject: submsg\r\n"
    b"\r\n"
    b"Hello world\r\n"
)


def test_top_level_message_rfc822_numbering() -> None:
    """imaptest fetch-body-message-rfc822: the top-level body of a non-multipart message is
    part 1 even when it is a message/rfc822 (RFC 9051 §6.4.5)."""
    root = parse(TOP_RFC822)
    inner = b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n"
    assert section_bytes(root, (1,), "") == inner
    assert section_bytes(root, (1,), "HEADER") == b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    assert section_bytes(root, (1,), "TEXT") == b"Hello world\r\n"
    assert section_bytes(root, (1, 1), "") == b"Hello world\r\n"
    assert section_bytes(root, (2,), "") is None


def test_envelope_comment_as_name_and_empty_group_comment() -> None:
    """imaptest fetch-envelope: `user@domain (Real Name)` takes the comment as its name;
    a comment alone inside a group is not an address."""
    msg = (b"From: user@domain (Real Name)\r\n"
           b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
           b"Cc: group:;, group2: (foo) ;\r\n"
           b"\r\nbody\r\n")
    env = envelope(parse(msg))
    assert b'(("Real Name" NIL "user" "domain"))' in env
    assert (b'((NIL NIL "group" NIL) (NIL NIL NIL NIL) (NIL NIL "group2" NIL) '
            b"(NIL NIL NIL NIL))") in env
    # a phrase still wins over a comment
    env = envelope(parse(b"From: Bob (work) <bob@x.test>\r\n\r\n"))
    assert b'(("Bob" NIL "bob" "x.test"))' in env


def test_quoted_printable_rules() -> None:
    """imaptest fetch-binary-mime-qp: trailing blanks are dropped, `=` then blanks is a soft
    break, a stray `=` stays (RFC 2045 §6.7)."""
    body = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\n"
            b"foo = \t\r\nbar\r\nfoo =\r\n=62\r\nfoo  \r\nbar=\r\n\r\nfoo_bar\r\n")
    assert decode_qp(body) == (b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\n"
                               b"foo\r\nbar\r\nfoo_bar\r\n")
    assert decode_qp(b"a=3D=XYb=4") == b"a==XYb=4"


def test_search_from_sees_through_comments_in_address() -> None:
    """imaptest search-addresses: `<user-from (comment)@ (comment) domain.org>`."""
    prog = parse_search(Reader(RawCommand((b"FROM user-from@domain.org",), (b"",))))
    ctx = SearchContext(1, 1, frozenset())
    for header in (b"From: <user-from (comment)@ (comment) domain.org>",
                   b"From: user-from@domain.org (RealFrom)",
                   b"From: RealFrom <user-from@domain.org>"):
        c = Candidate(1, _meta(), False)
        c.data = header + b"\r\n\r\nbody\r\n"
        assert matches(prog.key, c, ctx), header
    c = Candidate(1, _meta(), False)
    c.data = b"From: user-from1@domain.org\r\n\r\n"
    assert not matches(prog.key, c, ctx)
    env = envelope(parse(b"From: <user-from (comment)@ (comment) domain.org>\r\n\r\n"))
    assert b'((NIL NIL "user-from" "domain.org"))' in env


def _meta() -> MessageMeta:
    return MessageMeta(uid=1, flags=frozenset(), internaldate=0.0, size=10, modseq=1, blob_id=1)


async def test_condstore_enabling_fetch_reports_highestmodseq(imap_server: Server) -> None:
    """imaptest esearch-condstore: FETCH MODSEQ enables CONDSTORE on a selected mailbox, so
    an untagged OK [HIGHESTMODSEQ] comes first (RFC 7162 §3.1); ESEARCH RETURN (MIN) with a
    MODSEQ key reports the MIN message's mod-sequence (§3.1.5)."""
    async with connect(imap_server) as c:
        await c.login()
        for _ in range(3):
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1 MODSEQ")
        assert resp[0].startswith(b"* OK [HIGHESTMODSEQ "), resp
        again = await c.cmd("FETCH 1 MODSEQ")
        assert not any(b"HIGHESTMODSEQ" in x for x in again)  # only on enabling
        mods = {}
        for n in (1, 3, 2):
            resp = await c.cmd(f"STORE {n} +FLAGS (\\Seen)")
            m = re.search(rb"MODSEQ \((\d+)\)", joined(resp))
            assert m is not None, resp
            mods[n] = int(m.group(1))
        resp = await c.cmd('SEARCH RETURN (MIN) 1:3 MODSEQ "/flags/\\\\seen" all 1')
        assert b"MIN 1 MODSEQ %d" % mods[1] in resp[0], (resp, mods)
        resp = await c.cmd('SEARCH RETURN (MAX) 1:3 MODSEQ 1')
        assert b"MAX 3 MODSEQ %d" % mods[3] in resp[0], (resp, mods)
        resp = await c.cmd('SEARCH RETURN (COUNT) 1:3 MODSEQ 1')
        assert b"COUNT 3 MODSEQ %d" % max(mods.values()) in resp[0], (resp, mods)


async def test_noop_numbers_fetch_after_expunge_and_announces_keywords(
        imap_server: Server) -> None:
    """imaptest stress ("UID changed for sequence", "Keyword used without being in FLAGS"):
    when expunges and flag changes from another session arrive together, the EXPUNGEs come
    first and the FETCH after them uses the new numbers; a new keyword is announced in FLAGS
    before a FETCH shows it; an append plus an expunge give a consistent EXISTS."""
    async with connect(imap_server) as a, connect(imap_server) as b:
        await a.login()
        await b.login()
        for _ in range(3):
            await a.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        await a.cmd("SELECT INBOX")
        await b.cmd("SELECT INBOX")
        await b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        await b.cmd("EXPUNGE")
        await b.cmd("STORE 2 +FLAGS.SILENT ($fresh)")  # was message 3 (UID 3)
        await b.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        resp = await a.cmd("NOOP")
        lines = resp[:-1]
        assert lines[0] == b"* 1 EXPUNGE\r\n", resp
        flags_at = next(i for i, x in enumerate(lines) if x.startswith(b"* FLAGS"))
        fetch_at = next(i for i, x in enumerate(lines) if b"FETCH" in x)
        assert flags_at < fetch_at and b"$fresh" in lines[flags_at], resp
        assert lines[fetch_at].startswith(b"* 2 FETCH (UID 3 FLAGS ($fresh"), resp
        assert b"* 3 EXISTS\r\n" in lines, resp
        resp = await a.cmd("UID FETCH 1:* (FLAGS)")
        assert [x.split(b" ")[1] for x in resp[:-1]] == [b"1", b"2", b"3"], resp


async def test_silent_store_and_fetch_announce_new_keyword(imap_server: Server) -> None:
    """imaptest stress: STORE .SILENT of a new keyword still announces it in FLAGS, so a
    later FETCH FLAGS never shows an unannounced keyword."""
    async with connect(imap_server) as c:
        await c.login()
        await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("STORE 1 +FLAGS.SILENT ($quiet)")
        assert resp[0].startswith(b"* FLAGS (") and b"$quiet" in resp[0], resp
        assert b"FETCH" not in joined(resp)
        resp = await c.cmd("FETCH 1 FLAGS")
        assert not any(x.startswith(b"* FLAGS") for x in resp), resp  # already announced
    async with connect(imap_server) as a, connect(imap_server) as b:
        await a.login()
        await b.login()
        await a.cmd("SELECT INBOX")
        flagged = b"(\\Seen $other)"
        await b.cmd(b"APPEND INBOX " + flagged + b" {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        resp = await a.cmd("NOOP")
        flags_at = next(i for i, x in enumerate(resp) if x.startswith(b"* FLAGS"))
        exists_at = next(i for i, x in enumerate(resp) if x.endswith(b"EXISTS\r\n"))
        assert flags_at < exists_at and b"$other" in resp[flags_at], resp


async def test_move_into_the_selected_mailbox(imap_server: Server) -> None:
    """imaptest move: MOVE 1 to the mailbox itself gives COPYUID, EXPUNGE then EXISTS,
    with numbers that agree (RFC 6851 §3.3)."""
    async with connect(imap_server) as c:
        await c.login()
        for _ in range(2):
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("MOVE 1 INBOX")
        assert resp[0].startswith(b"* OK [COPYUID ") and b" 1 3]" in resp[0], resp
        assert resp[1:-1] == [b"* 1 EXPUNGE\r\n", b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"], resp
        resp = await c.cmd("FETCH 1:* (UID)")
        assert resp[:-1] == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 3)\r\n"], resp


async def test_lsub_and_list_extended_subscriptions(imap_server: Server) -> None:
    """imaptest subscribe / listext: CREATE does not subscribe; LSUB shows an unsubscribed
    parent of a subscribed mailbox the pattern skips as \\Noselect (RFC 3501 §6.3.9); LIST
    (SUBSCRIBED RECURSIVEMATCH) gives it CHILDINFO (RFC 5258 §3.5); RECURSIVEMATCH alone
    is BAD."""
    async with connect(imap_server) as c:
        await c.login()
        for name in ("box", "box/a", "box/b/", "box/b/c", "box/d/e"):
            assert st(await c.cmd(f"CREATE {name}")).startswith(b"OK")
        resp = await c.cmd('LSUB "" box*')
        assert resp[:-1] == [], resp  # nothing subscribed yet
        for name in ("box/a", "box/b/c", "box/d/e"):
            await c.cmd(f"SUBSCRIBE {name}")
        resp = await c.cmd('LSUB "" box/%')
        assert resp[:-1] == [b'* LSUB () "/" box/a\r\n', b'* LSUB (\\Noselect) "/" box/b\r\n',
                             b'* LSUB (\\Noselect) "/" box/d\r\n'], resp
        resp = await c.cmd('LSUB "" box/*')
        assert [x.rsplit(b" ", 1)[1] for x in resp[:-1]] == [b"box/a\r\n", b"box/b/c\r\n",
                                                             b"box/d/e\r\n"], resp
        resp = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" box/% RETURN (CHILDREN)')
        lines = joined(resp)
        assert b'(\\HasChildren) "/" box/b ("CHILDINFO" ("SUBSCRIBED"))' in lines, resp
        assert b'(\\HasNoChildren \\Subscribed) "/" box/a\r\n' in lines, resp
        assert b"box/d" in lines and b"box/b/c" not in lines, resp
        # the child listed itself: no CHILDINFO for the parent
        resp = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" (box/b box/b/c)')
        assert b"CHILDINFO" not in joined(resp) and b"box/b/c" in joined(resp), resp
        resp = await c.cmd('LIST (RECURSIVEMATCH) "" %')
        assert st(resp).startswith(b"BAD"), resp
        resp = await c.cmd('LIST (RECURSIVEMATCH REMOTE) "" %')
        assert st(resp).startswith(b"BAD"), resp


async def test_subscription_outlives_delete(imap_server: Server) -> None:
    """imaptest listext: a subscription stays after DELETE and shows as \\NonExistent
    \\Subscribed (RFC 9051 §6.3.7, RFC 5258 §3); a re-created name gets a new
    UIDVALIDITY (imaptest uidvalidity, RFC 9051 §2.3.1.1)."""
    async with connect(imap_server) as c:
        await c.login()
        await c.cmd("CREATE gone")
        first = joined(await c.cmd("STATUS gone (UIDVALIDITY)"))
        await c.cmd("SUBSCRIBE gone")
        assert st(await c.cmd("DELETE gone")).startswith(b"OK")
        lines = joined(await c.cmd('LIST (SUBSCRIBED) "" gone'))
        assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" gone' in lines, lines
        assert b'* LSUB () "/" gone' in joined(await c.cmd('LSUB "" gone'))
        assert b"gone" not in joined(await c.cmd('LIST "" gone'))
        await c.cmd("CREATE gone")
        second = joined(await c.cmd("STATUS gone (UIDVALIDITY)"))
        assert first != second


def test_multipart_split_edges() -> None:
    """The find-based splitter (a speed fix) keeps RFC 2046 §5.1.1 rules: the CRLF before a
    delimiter belongs to it, blanks may follow a delimiter, a boundary string that is only a
    prefix of a longer one does not count, and a missing close delimiter ends at the end."""
    from pochta.proto.imap.bodystructure import _split_multipart as split
    assert split(b"pre\r\n--b\r\nA\r\n--b \t\r\nB\r\n--b--\r\nepi", b"b") == [b"A", b"B"]
    assert split(b"--b\nA\n--b\nB\n--b--", b"b") == [b"A", b"B"]
    assert split(b"--b\r\nA\r\n--bx\r\nstill A\r\n--b--", b"b") == [b"A\r\n--bx\r\nstill A"]
    assert split(b"--b\r\nA\r\nx--b\r\n--b\r\nB", b"b") == [b"A\r\nx--b", b"B"]
    assert split(b"no delimiter at all", b"b") == []
    assert split(b"--b\r\n\r\nbody\r\n", b"b") == [b"\r\nbody\r\n"]
