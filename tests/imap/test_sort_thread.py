"""SORT, SORT=DISPLAY, ESORT, PARTIAL and THREAD (RFC 5256, 5957, 5267, 9394)."""

from __future__ import annotations

from typing import Any

from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import Reader
from pochta.proto.imap.search import apply_partial
from pochta.proto.imap.sort import Thread, base_subject, parse_sort, render_threads
from tests.conftest import Server
from tests.imap.helpers import Client, connect, joined, st


def reader(text: str) -> Reader:
    return Reader(RawCommand((text.encode(),), ()))


def test_base_subject_rfc5256_2_1() -> None:
    assert base_subject("Re: [list] Fwd: hello (fwd)") == ("HELLO", True)
    assert base_subject("[fwd: Re: hello]") == ("HELLO", True)
    assert base_subject("  hello   world  ") == ("HELLO WORLD", False)
    assert base_subject("RE[5]: hello") == ("HELLO", True)
    assert base_subject("[blob] ") == ("[BLOB]", False)  # a blob alone is the subject
    assert base_subject("=?utf-8?q?Re=3A_caf=C3=A9?=")[0] == "CAFÉ"


def test_thread_rendering_rfc5256_4() -> None:
    # the RFC's example: (2)(3 6 (4 23)(44 7 96))
    tree: list[Thread] = [(2, []), (3, [(6, [(4, [(23, [])]), (44, [(7, [(96, [])])])])])]
    assert render_threads(tree) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"


def test_partial_ranges_rfc9394() -> None:
    nums = list(range(1, 11))
    assert apply_partial(nums, (1, 3)) == [1, 2, 3]
    assert apply_partial(nums, (9, 20)) == [9, 10]
    assert apply_partial(nums, (-1, -3)) == [8, 9, 10]
    assert apply_partial(nums, (-20, -30)) == []


def test_parse_sort() -> None:
    req = parse_sort(reader("RETURN (MIN COUNT PARTIAL 1:5) (REVERSE DATE SUBJECT) UTF-8 ALL"))
    assert req.criteria == [("DATE", True), ("SUBJECT", False)]
    assert req.returns == ["MIN", "COUNT", "PARTIAL"] and req.partial == (1, 5)


MESSAGES = [
    # (from, to, subject, date, message-id, references)
    ("Zed <zed@example.test>", "b@example.test", "Hello", "Mon, 7 Feb 1994 21:52:25 -0800",
     "<a@x>", ""),
    ("Alice Able <amy@example.test>", "c@example.test", "Re: hello",
     "Tue, 8 Feb 1994 10:00:00 +0000", "<b@x>", "<a@x>"),
    ("bob@example.test", "a@example.test", "Another topic", "Sun, 6 Feb 1994 10:00:00 +0000",
     "<c@x>", ""),
    ("Carol <carol@example.test>", "d@example.test", "Re: Re: hello",
     "Wed, 9 Feb 1994 10:00:00 +0000", "<d@x>", "<a@x> <b@x>"),
    ("dave@example.test", "e@example.test", "Re: Another topic",
     "Thu, 10 Feb 1994 10:00:00 +0000", "<e@x>", "<c@x>"),
]


async def fill(c: Client) -> None:
    for frm, to, subj, date, mid, refs in MESSAGES:
        msg = (f"From: {frm}\r\nTo: {to}\r\nSubject: {subj}\r\nDate: {date}\r\n"
               f"Message-ID: {mid}\r\n" + (f"References: {refs}\r\n" if refs else "")
               + "\r\nbody\r\n").encode()
        resp = await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
        assert b"OK" in resp[-1]
    await c.cmd("SELECT INBOX")


async def test_sort_transcript(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd("CAPABILITY")
        for cap in (b"SORT", b"SORT=DISPLAY", b"THREAD=REFERENCES", b"ESORT", b"PARTIAL"):
            assert b" " + cap in resp[0]
        await fill(c)
        assert (await c.cmd("SORT (DATE) UTF-8 ALL"))[0] == b"* SORT 3 1 2 4 5\r\n"
        assert (await c.cmd("SORT (REVERSE DATE) UTF-8 ALL"))[0] == b"* SORT 5 4 2 1 3\r\n"
        # base subjects: ANOTHER TOPIC (3, 5), HELLO (1, 2, 4); ties by sequence
        assert (await c.cmd("SORT (SUBJECT) UTF-8 ALL"))[0] == b"* SORT 3 5 1 2 4\r\n"
        resp = await c.cmd("SORT (SUBJECT REVERSE DATE) UTF-8 ALL")
        assert resp[0] == b"* SORT 5 3 4 2 1\r\n"
        # FROM sorts by mailbox: amy bob carol dave zed; DISPLAYFROM by display name
        assert (await c.cmd("SORT (FROM) UTF-8 ALL"))[0] == b"* SORT 2 3 4 5 1\r\n"
        assert (await c.cmd("SORT (DISPLAYFROM) UTF-8 ALL"))[0] == b"* SORT 2 3 4 5 1\r\n"
        assert (await c.cmd("SORT (TO) UTF-8 ALL"))[0] == b"* SORT 3 1 2 4 5\r\n"
        resp = await c.cmd("SORT (SUBJECT) US-ASCII TEXT \"not in mailbox\"")
        assert resp[0] == b"* SORT\r\n" and st(resp).startswith(b"OK")
        resp = await c.cmd("UID SORT (DATE) UTF-8 SUBJECT hello")
        assert resp[0] == b"* SORT 1 2 4\r\n"
        resp = await c.cmd("SORT (SUBJECT) ISO-2022-JP ALL")
        assert b"NO [BADCHARSET" in resp[-1]
        resp = await c.cmd("SORT (FOO) UTF-8 ALL")
        assert b"BAD" in resp[-1]


async def test_sort_by_the_store_agrees_and_follows_the_session_view(imap_server: Server
                                                                      ) -> None:
    """SORT ... ALL of a mailbox whose keys are kept is sorted by the store; it must give
    what the server's own sort gives (SORT ... UNDELETED takes that path here), and answer
    for the session's view: not yet announced arrivals left out, messages expunged by
    another session but not yet announced kept in."""
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await fill(c)
        assert (await c.cmd("SORT (DATE) UTF-8 ALL"))[0] == b"* SORT 3 1 2 4 5\r\n"
        for crit in ("DATE", "REVERSE ARRIVAL", "SUBJECT", "REVERSE SUBJECT", "FROM",
                     "SIZE", "REVERSE CC", "TO", "DISPLAYFROM", "REVERSE DISPLAYTO",
                     "SUBJECT REVERSE DATE", "REVERSE FROM SIZE"):
            by_store = await c.cmd(f"SORT ({crit}) UTF-8 ALL")
            by_server = await c.cmd(f"SORT ({crit}) UTF-8 UNDELETED")
            assert by_store[0] == by_server[0], crit
            uid_store = await c.cmd(f"UID SORT RETURN (ALL) ({crit}) UTF-8 ALL")
            uid_server = await c.cmd(f"UID SORT RETURN (ALL) ({crit}) UTF-8 UNDELETED")
            assert uid_store[0].split(b")", 1)[1] == uid_server[0].split(b")", 1)[1], crit
        await other.login()
        late = (b"From: x@example.test\r\nSubject: late\r\n"
                b"Date: Fri, 1 Jan 2027 10:00:00 +0000\r\n\r\nlate\r\n")
        assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(late) + late))[-1]
        await other.cmd("SELECT INBOX")
        await other.cmd("SORT (DATE) UTF-8 ALL")  # keeps the new message's keys
        resp = await c.cmd("SORT (DATE) UTF-8 ALL")
        assert resp[0] == b"* SORT 3 1 2 4 5\r\n" and b"* 6 EXISTS\r\n" in resp
        await other.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert st(await other.cmd("EXPUNGE")).startswith(b"OK")
        resp = await c.cmd("SORT (DATE) UTF-8 ALL")  # message 1 is still in c's view
        assert resp[0] == b"* SORT 3 1 2 4 5 6\r\n"
        resp = await c.cmd("NOOP")
        assert b"* 1 EXPUNGE\r\n" in resp
        assert (await c.cmd("SORT (DATE) UTF-8 ALL"))[0] == b"* SORT 2 1 3 4 5\r\n"


async def test_esort_and_partial(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        await fill(c)
        resp = await c.cmd("SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL")
        assert resp[0].startswith(b'* ESEARCH (TAG "')
        assert resp[0].endswith(b" MIN 3 MAX 5 ALL 3,1:2,4:5 COUNT 5\r\n"), resp
        resp = await c.cmd("UID SORT RETURN (PARTIAL -1:-2) (DATE) UTF-8 ALL")
        assert resp[0].endswith(b" UID PARTIAL (-1:-2 4:5)\r\n"), resp
        resp = await c.cmd("SEARCH RETURN (PARTIAL 2:3) ALL")
        assert resp[0].endswith(b" PARTIAL (2:3 2:3)\r\n"), resp
        resp = await c.cmd("SEARCH RETURN (PARTIAL 9:10) ALL")
        assert resp[0].endswith(b" PARTIAL (9:10 NIL)\r\n"), resp
        resp = await c.cmd("UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)")
        text = joined(resp)
        assert b"* 4 FETCH" in text and b"* 5 FETCH" in text and b"* 3 FETCH" not in text


async def test_thread_transcript(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        await fill(c)
        resp = await c.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")
        # groups by base subject, ordered by their first date: ANOTHER TOPIC (6 Feb), HELLO
        assert resp[0] == b"* THREAD (3 5)(1 (2)(4))\r\n", resp
        resp = await c.cmd("THREAD REFERENCES UTF-8 ALL")
        assert resp[0] == b"* THREAD (3 5)(1 2 4)\r\n", resp
        resp = await c.cmd("UID THREAD REFERENCES UTF-8 SUBJECT hello")
        assert resp[0] == b"* THREAD (1 2 4)\r\n", resp
        resp = await c.cmd("THREAD ORDEREDSUBJECT US-ASCII TEXT gewp")
        assert resp[0] == b"* THREAD \r\n" or resp[0] == b"* THREAD\r\n"
        resp = await c.cmd("THREAD FOO UTF-8 ALL")
        assert b"BAD" in resp[-1]


async def test_thread_answer_follows_the_view(imap_server: Server) -> None:
    """THREAD ... ALL of an unchanged view may be answered again without recomputing
    (the server keeps recent answers); an arrival or an expunge, in this session or
    another, changes the view and so the answer."""
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await fill(c)
        for _ in range(2):
            assert (await c.cmd("THREAD REFERENCES UTF-8 ALL"))[0] == \
                b"* THREAD (3 5)(1 2 4)\r\n"
            assert (await c.cmd("UID THREAD REFERENCES UTF-8 ALL"))[0] == \
                b"* THREAD (3 5)(1 2 4)\r\n"
        await other.login()
        reply = (b"From: x@example.test\r\nSubject: Re: Another topic\r\n"
                 b"Date: Fri, 11 Feb 1994 10:00:00 +0000\r\nMessage-ID: <f@x>\r\n"
                 b"References: <c@x> <e@x>\r\n\r\nreply\r\n")
        assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(reply) + reply))[-1]
        await c.cmd("NOOP")  # c's view now has message 6
        assert (await c.cmd("THREAD REFERENCES UTF-8 ALL"))[0] == \
            b"* THREAD (3 5 6)(1 2 4)\r\n"
        await other.cmd("SELECT INBOX")
        await other.cmd("STORE 3 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        # 5 and its reply 6 (now 4 and 5) lost their root 3: their thread now starts on
        # 10 Feb, after HELLO's (7 Feb)
        assert (await c.cmd("UID THREAD REFERENCES UTF-8 ALL"))[0] == \
            b"* THREAD (1 2 4)(5 6)\r\n"
        assert (await c.cmd("THREAD REFERENCES UTF-8 ALL"))[0] == \
            b"* THREAD (1 2 3)(4 5)\r\n"


async def test_thread_references_subject_merge_and_missing_parent(imap_server: Server
                                                                  ) -> None:
    """Two messages replying to one we do not have share a dummy parent; a reply whose
    References are missing joins its thread by base subject (RFC 5256 §2.5 (5))."""
    async with connect(imap_server) as c:
        await c.login()
        msgs = [
            ("Subject: Party\r\nDate: Mon, 7 Feb 1994 10:00:00 +0000\r\n"
             "Message-ID: <p1@x>\r\nReferences: <gone@x>\r\n"),
            ("Subject: Re: Party\r\nDate: Mon, 7 Feb 1994 11:00:00 +0000\r\n"
             "Message-ID: <p2@x>\r\nReferences: <gone@x>\r\n"),
            ("Subject: Lunch\r\nDate: Mon, 7 Feb 1994 12:00:00 +0000\r\nMessage-ID: <l1@x>\r\n"),
            ("Subject: Re: Lunch\r\nDate: Mon, 7 Feb 1994 13:00:00 +0000\r\n"
             "Message-ID: <l2@x>\r\n"),
        ]
        for m in msgs:
            data = (m + "\r\nx\r\n").encode()
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("THREAD REFERENCES UTF-8 ALL")
        assert resp[0] == b"* THREAD ((1)(2))(3 4)\r\n", resp


async def test_thread_from_kept_keys_agrees_and_follows_the_session_view(
        imap_server: Server) -> None:
    """THREAD ... ALL of a mailbox whose keys are kept reads them as columns (no SEARCH,
    no message objects); it must give what the general path gives (THREAD ... UNDELETED
    takes it here), by sequence number and by UID, and answer for the session's view:
    not yet announced arrivals left out, a message expunged by another session but not
    yet announced kept in."""
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await fill(c)
        await c.cmd("SORT (DATE) UTF-8 ALL")  # keeps every message's keys

        async def agree(want_refs: bytes) -> None:
            for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
                for prefix in ("", "UID "):
                    fast = await c.cmd(f"{prefix}THREAD {algorithm} UTF-8 ALL")
                    general = await c.cmd(f"{prefix}THREAD {algorithm} UTF-8 UNDELETED")
                    assert fast[0] == general[0], (prefix, algorithm, fast, general)
            assert (await c.cmd("THREAD REFERENCES UTF-8 ALL"))[0] == want_refs

        await other.login()
        reply = (b"From: x@example.test\r\nSubject: Re: hello\r\n"
                 b"Date: Fri, 11 Feb 1994 10:00:00 +0000\r\nMessage-ID: <f@x>\r\n"
                 b"References: <a@x> <d@x>\r\n\r\nreply\r\n")
        assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(reply) + reply))[-1]
        await other.cmd("SELECT INBOX")
        await other.cmd("SORT (DATE) UTF-8 ALL")  # keeps the new message's keys
        # c has not seen message 6 yet: its answer leaves it out (and announces it)
        resp = await c.cmd("UID THREAD ORDEREDSUBJECT UTF-8 ALL")
        assert resp[0] == b"* THREAD (3 5)(1 (2)(4))\r\n" and b"* 6 EXISTS\r\n" in resp
        await other.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert st(await other.cmd("EXPUNGE")).startswith(b"OK")
        # message 1 is gone from the store but still in c's view (not announced by THREAD)
        resp = await c.cmd("THREAD REFERENCES UTF-8 ALL")
        assert b"EXPUNGE" not in joined(resp) and st(resp).startswith(b"OK")
        assert resp[0] == (await c.cmd("THREAD REFERENCES UTF-8 UNDELETED"))[0]
        await c.cmd("NOOP")
        await agree(b"* THREAD (2 4)(1 3 5)\r\n")
        # an arrival nobody sorted or threaded yet: its keys are computed and kept for
        # this answer, the others are read as kept
        late = (b"From: y@example.test\r\nSubject: Re: Another topic\r\n"
                b"Date: Sat, 12 Feb 1994 10:00:00 +0000\r\nMessage-ID: <g@x>\r\n"
                b"In-Reply-To: <e@x>\r\n\r\nlate\r\n")
        assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(late) + late))[-1]
        await c.cmd("NOOP")
        assert (await c.cmd("UID THREAD REFERENCES UTF-8 ALL"))[0] == \
            b"* THREAD (3 5 7)(2 4 6)\r\n"
        await agree(b"* THREAD (2 4 6)(1 3 5)\r\n")
        assert (await c.cmd("SORT (DATE) UTF-8 ALL"))[0] == b"* SORT 2 1 3 4 5 6\r\n"


def test_thread_columns_merged_by_uid() -> None:
    """The server's kept columns and rows read later merge by UID: arrivals after every
    row, and rows that were missing in the middle (keys kept later)."""
    from pochta.server.imap_sort import _merged
    from pochta.storage.interfaces_imap import ThreadColumns

    def cols(uids: list[int]) -> ThreadColumns:
        return ThreadColumns(uids, [float(u) for u in uids], [f"S{u}" for u in uids],
                             [u % 2 == 0 for u in uids], [f"<{u}@x>" for u in uids],
                             ["" for _ in uids])

    assert _merged(cols([1, 2, 5]), cols([7, 9])) == cols([1, 2, 5, 7, 9])
    assert _merged(cols([1, 2, 5]), cols([3, 9])) == cols([1, 2, 3, 5, 9])
    assert _merged(cols([]), cols([4])) == cols([4])
    assert _merged(cols([4]), cols([])) == cols([4])


def test_column_cache_is_bounded_and_per_uidvalidity() -> None:
    """The kept columns and key marks belong to a mailbox and its UIDVALIDITY (a mailbox
    created again under the same id starts over); only the last few mailboxes stay."""
    from pochta.server.imap_cache import ColumnCache
    from pochta.storage.interfaces import MailboxInfo
    from pochta.storage.interfaces_imap import ThreadColumns

    def box(id_: int, validity: int = 1) -> MailboxInfo:
        return MailboxInfo(id_, 1, f"B{id_}", validity, 1, 1, None, False)

    cache = ColumnCache(size=2, marks=2)
    cols = ThreadColumns([1], [1.0], ["S"], [False], ["<1@x>"], [""])
    for i in (1, 2, 3):
        cache.put(box(i), cols)
    assert cache.get(box(1)) is None and cache.get(box(3)) is cols
    assert cache.get(box(3, validity=2)) is None
    cache.set_keyed_upto(box(1), 10)
    cache.set_keyed_upto(box(1), 7)  # never goes back
    assert cache.keyed_upto(box(1)) == 10 and cache.keyed_upto(box(1, validity=2)) == 0
    cache.set_keyed_upto(box(2), 5)
    cache.set_keyed_upto(box(3), 5)
    assert cache.keyed_upto(box(1)) == 0  # the oldest mark went


async def test_thread_references_links_arrivals_in(imap_server: Server) -> None:
    """After an arrival, THREAD REFERENCES ... ALL links the new messages into the links
    kept from the last answer (the same object, extended) rather than threading every
    message again, and answers as the general path (THREAD ... UNDELETED) does; an
    arrival that cannot be linked in exactly (dated early and naming two messages) and
    an expunge of a message others name make new links, an expunged reply is taken out
    of the kept ones; a session that has not seen the arrivals yet gets its own
    view's answer and does not undo the others' links."""
    async with connect(imap_server) as c, connect(imap_server) as other, \
            connect(imap_server) as behind:
        await c.login()
        await fill(c)
        await other.login()
        await behind.login()
        await behind.cmd("SELECT INBOX")
        columns = imap_server.ctx.imap_columns

        def kept() -> object:
            assert len(columns.links) == 1  # (one mailbox)
            return next(iter(columns.links.values()))[1]

        async def agree() -> bytes:  # (the UID THREAD answer)
            for prefix in ("", "UID "):
                fast = await c.cmd(f"{prefix}THREAD REFERENCES UTF-8 ALL")
                general = await c.cmd(f"{prefix}THREAD REFERENCES UTF-8 UNDELETED")
                assert fast[0] == general[0], (prefix, fast, general)
            return fast[0]

        async def arrive(date: str, mid: str, refs: str, subject: str) -> None:
            data = (f"From: z@example.test\r\nSubject: {subject}\r\nDate: {date}\r\n"
                    f"Message-ID: {mid}\r\n" + (f"References: {refs}\r\n" if refs else "")
                    + "\r\nbody\r\n").encode()
            assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(data) + data))[-1]

        first = await agree()
        assert first == b"* THREAD (3 5)(1 2 4)\r\n"
        links = kept()
        # dated before most of the mailbox, a new Message-ID replying to one message
        await arrive("Mon, 7 Feb 1994 23:00:00 +0000", "<n1@x>", "<c@x>", "Re: Another topic")
        # dated after all: any shape links in
        await arrive("Mon, 7 Mar 1994 10:00:00 +0000", "<n2@x>", "<a@x> <d@x>", "Re: hello")
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 (6)(5))(1 2 4 7)\r\n"
        assert kept() is links
        # what `behind` sees is its own view; the kept links still cover the larger one
        assert (await behind.cmd("THREAD REFERENCES UTF-8 ALL"))[0] == first
        assert kept() is links
        # dated early and naming two messages: linked again from scratch
        await arrive("Sat, 5 Feb 1994 10:00:00 +0000", "<n3@x>", "<b@x> <n1@x>", "Re: x")
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 (6 8)(5))(1 2 4 7)\r\n"
        assert kept() is not links
        links = kept()
        await other.cmd("SELECT INBOX")
        await other.cmd("STORE 2 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 (6 8)(5))(1 4 7)\r\n"  # by UID
        assert kept() is not links
        # a reply naming one message, whose Message-ID no other names: taken out of the
        # kept links (ThreadLinks.remove), not linked again
        links = kept()
        await other.cmd("UID STORE 5 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 6 8)(1 4 7)\r\n"
        assert kept() is links


def test_kept_links_follow_the_columns() -> None:
    """REFERENCES links are kept only with a mailbox's columns (bounded, dropped when they
    go), per UIDVALIDITY, given only for a view they cover a first part of, and not
    replaced by those of a view behind them."""
    from pochta.proto.imap.sort import ThreadInput, ThreadLinks
    from pochta.server.imap_cache import ColumnCache
    from pochta.storage.interfaces import MailboxInfo
    from pochta.storage.interfaces_imap import ThreadColumns

    def box(id_: int, validity: int = 1) -> MailboxInfo:
        return MailboxInfo(id_, 1, f"B{id_}", validity, 1, 1, None, False)

    def links(n: int) -> ThreadLinks:
        return ThreadLinks(ThreadInput(list(range(1, n + 1)), [1.0] * n, ["S"] * n,
                                       [False] * n, [f"<{i}@x>" for i in range(n)], [""] * n))

    cache = ColumnCache(size=2)
    cols = ThreadColumns([1], [1.0], ["S"], [False], ["<1@x>"], [""])
    cache.put_thread_links(box(1), [1, 2], links(2))  # no columns kept: not kept either
    assert cache.thread_links(box(1), [1, 2]) is None
    cache.put(box(1), cols)
    two = links(2)
    cache.put_thread_links(box(1), [1, 2], two)
    assert cache.thread_links(box(1), [1, 2, 5]) is two
    assert cache.thread_links(box(1), [1]) is None  # covers more than this view
    assert cache.thread_links(box(1), [1, 3]) is None  # 2 expunged
    assert cache.thread_links(box(1, validity=2), [1, 2]) is None
    cache.put_thread_links(box(1), [1], links(1))  # a view behind: kept ones stay
    assert cache.thread_links(box(1), [1, 2]) is two
    cache.put_thread_links(box(1), [1, 3], links(2))  # after an expunge: replaced
    assert cache.thread_links(box(1), [1, 2]) is None
    cache.put(box(2), cols)
    cache.put(box(3), cols)  # box 1's columns go, and its links with them
    assert cache.thread_links(box(1), [1, 3]) is None and not cache.links


async def test_thread_snapshot_after_a_restart(imap_server: Server, monkeypatch: Any) -> None:
    """The first THREAD of a mailbox keeps a snapshot of its columns and links in the
    store; after a restart (the process's caches gone) THREAD starts from it: no read
    of every message's keys and, when no message was expunged since, no linking of
    every message; arrivals since are read and linked in. The answers stay those of the
    general path. A snapshot of another UIDVALIDITY, or one that does not decode, is
    ignored; after an expunge its links are used only when the expunged messages can
    be taken out of them (a reply nobody names), else every message is linked again."""
    from pochta.proto.imap.sort import ThreadLinks
    from pochta.server import imap_sort, imap_thread_snapshot
    from pochta.server.imap_cache import ColumnCache, ThreadCache
    from pochta.storage.interfaces_imap import ThreadSnapshot

    monkeypatch.setattr(imap_thread_snapshot, "MIN_ROWS", 1)
    monkeypatch.setattr(imap_thread_snapshot, "EVERY", 3)
    store = imap_server.store
    whole_reads: list[int] = []
    real_columns = store.thread_columns

    async def columns(mailbox_id: int, uids: Any = None) -> Any:
        if uids is None:
            whole_reads.append(mailbox_id)
        return await real_columns(mailbox_id, uids)

    monkeypatch.setattr(store, "thread_columns", columns)
    built: list[int] = []

    class CountedLinks(ThreadLinks):
        def __init__(self, m: Any) -> None:
            built.append(len(m.dates))
            super().__init__(m)

    monkeypatch.setattr(imap_sort, "ThreadLinks", CountedLinks)

    def restart() -> None:
        imap_server.ctx.imap_columns = ColumnCache()
        imap_server.ctx.imap_threads = ThreadCache()
        whole_reads.clear()
        built.clear()

    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await fill(c)
        await other.login()
        await other.cmd("SELECT INBOX")

        async def agree() -> bytes:
            fast = await c.cmd("UID THREAD REFERENCES UTF-8 ALL")
            general = await c.cmd("UID THREAD REFERENCES UTF-8 UNDELETED")
            assert fast[0] == general[0], (fast, general)
            return fast[0]

        assert await agree() == b"* THREAD (3 5)(1 2 4)\r\n"
        assert len(whole_reads) == 1 and built == [5]
        snaps = {i: await store.get_thread_snapshot(i) for i in range(1, 20)}
        kept = {i: x for i, x in snaps.items() if x is not None}
        assert len(kept) == 1
        mailbox_id, first = next(iter(kept.items()))
        assert first.uid_upto == 5

        restart()
        reply = (b"From: x@example.test\r\nSubject: Re: hello\r\n"
                 b"Date: Fri, 11 Feb 1994 10:00:00 +0000\r\nMessage-ID: <f@x>\r\n"
                 b"References: <a@x>\r\n\r\nreply\r\n")
        assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(reply) + reply))[-1]
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 5)(1 (2 4)(6))\r\n"
        assert whole_reads == [] and built == []  # columns and links from the snapshot

        restart()
        await other.cmd("STORE 1 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        assert await agree() == b"* THREAD (3 5)((2 4)(6))\r\n"
        # its columns and links: the thread's first message is taken out of the links
        # (its container becomes a dummy), nothing is linked again
        assert whole_reads == [] and built == []

        for bad in (b"not a snapshot", None):
            restart()
            snap = await store.get_thread_snapshot(mailbox_id)
            assert snap is not None
            await store.put_thread_snapshot(mailbox_id, ThreadSnapshot(
                snap.uidvalidity + (bad is None), snap.uid_upto, bad or snap.data))
            assert await agree() == b"* THREAD (3 5)((2 4)(6))\r\n"
            assert len(whole_reads) == 1  # ignored: read from the store

        # arrivals enough for a new snapshot, written by an ORDEREDSUBJECT: the kept
        # links are extended to its rows, so the next start links nothing again
        restart()
        for n in range(3):
            late = (b"From: y@example.test\r\nSubject: Re: Another topic\r\n"
                    b"Date: Sat, 12 Feb 1994 1%d:00:00 +0000\r\nMessage-ID: <late%d@x>\r\n"
                    b"In-Reply-To: <e@x>\r\n\r\nlate\r\n" % (n, n))
            assert b"OK" in (await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(late) + late))[-1]
        await c.cmd("NOOP")
        await c.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")
        snap = await store.get_thread_snapshot(mailbox_id)
        assert snap is not None and snap.uid_upto == 9
        restart()
        assert await agree() == b"* THREAD (3 5 (7)(8)(9))((2 4)(6))\r\n"
        assert whole_reads == [] and built == []

        # a reply expunged after the snapshot, then an ORDEREDSUBJECT first: the kept
        # columns keep its keys, and REFERENCES takes it out of the snapshot's links
        restart()
        await other.cmd("UID STORE 9 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        await c.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")
        assert await agree() == b"* THREAD (3 5 (7)(8))((2 4)(6))\r\n"
        assert whole_reads == [] and built == []


async def test_thread_snapshot_gets_the_links_after_orderedsubject(
        imap_server: Server, monkeypatch: Any) -> None:
    """An ORDEREDSUBJECT first keeps a snapshot without links; the REFERENCES after it
    writes it again with them, so the first REFERENCES after a restart links no message
    (found at 17:26 on 100,000 messages: 600 ms instead of the snapshot's ~100)."""
    from pochta.proto.imap.sort import ThreadLinks
    from pochta.server import imap_sort, imap_thread_snapshot
    from pochta.server.imap_cache import ColumnCache, ThreadCache

    monkeypatch.setattr(imap_thread_snapshot, "MIN_ROWS", 1)
    built: list[int] = []

    class CountedLinks(ThreadLinks):
        def __init__(self, m: Any) -> None:
            built.append(len(m.dates))
            super().__init__(m)

    monkeypatch.setattr(imap_sort, "ThreadLinks", CountedLinks)
    async with connect(imap_server) as c:
        await c.login()
        await fill(c)
        ordered = await c.cmd("UID THREAD ORDEREDSUBJECT UTF-8 ALL")
        assert built == []
        references = await c.cmd("UID THREAD REFERENCES UTF-8 ALL")
        assert built == [5]
        imap_server.ctx.imap_columns = ColumnCache()  # a restart: the caches are gone
        imap_server.ctx.imap_threads = ThreadCache()
        built.clear()
        await c.cmd("SELECT INBOX")
        assert (await c.cmd("UID THREAD REFERENCES UTF-8 ALL"))[0] == references[0]
        assert built == []  # the links came from the snapshot
        assert (await c.cmd("UID THREAD ORDEREDSUBJECT UTF-8 ALL"))[0] == ordered[0]
