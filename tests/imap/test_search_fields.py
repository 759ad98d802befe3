"""SEARCH FROM/TO/CC/BCC/SUBJECT on the header texts the store keeps per message
(``Candidate.search_fields``): the same answers as reading each message's header, on
tricky headers (encoded words, folded lines, groups, comments inside addresses)."""

from __future__ import annotations

import asyncio
import re

import pytest

from pochta.proto.imap.bodystructure import Headers, _split_header
from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import Reader
from pochta.proto.imap.search import (
    Candidate,
    SearchContext,
    matches,
    parse_search,
    search_fields_of,
)
from pochta.proto.imap.sort import compute_sort_keys
from pochta.server.imap_searchkeep import keep_once
from pochta.storage.interfaces import Envelope, LocalTarget, MailStore, MessageMeta
from tests.conftest import Server
from tests.imap.helpers import connect
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401

TRICKY = [
    # encoded words (Q and B, UTF-8 and Latin-1), split across a folded line
    b"From: =?utf-8?q?Ren=C3=A9e?= Dupont <renee@example.test>\r\n"
    b"To: =?iso-8859-1?q?J=F6rg?= <jorg@example.test>,\r\n bob@example.test\r\n"
    b"Subject: =?utf-8?b?Q2Fmw6kgcmVwb3J0?=\r\n =?utf-8?q?_for_M=C3=A4rz?=\r\n\r\nbody\r\n",
    # a group, an empty group, a comment inside the address, folded Cc
    b"From: sender17 (the robot) <sender17@example.test>\r\n"
    b"To: Team: alice@example.test, carol@example.test;, undisclosed-recipients:;\r\n"
    b"Cc: <dave (c) @ (c) example.test>,\r\n\t\"Eve, E.\" <eve@example.test>\r\n"
    b"Bcc: hidden@example.test\r\nSubject: plain\r\n subject folded\r\n\r\nbody\r\n",
    # no address fields at all, an empty Subject, a second From
    b"Subject:\r\nFrom: first@example.test\r\nFrom: second@example.test\r\n\r\nbody\r\n",
    # raw 8-bit UTF-8 in a header and a NUL that no store takes as text
    "From: Zoë <zoe@example.test>\r\nSubject: caf\u00e9 \x00 nul\r\n\r\nbody\r\n".encode(),
    # separators of the kept format inside a header
    b"From: odd\x1e\x1f <odd@example.test>\r\nSubject: x\r\n\r\nbody\r\n",
]

NEEDLES = [
    "FROM renée", "FROM RENEE", "FROM dupont", "TO jörg", "TO bob@", "SUBJECT café",
    'SUBJECT "report for märz"', "FROM sender17", "FROM robot", "TO team", "TO carol",
    "TO undisclosed", "CC dave@example.test", 'CC "eve, e."', "BCC hidden", "SUBJECT folded",
    "FROM second", "FROM first", 'SUBJECT ""', 'FROM ""', 'CC ""', "FROM zoë",
    "SUBJECT nul", "FROM odd", "SUBJECT x", "OR FROM renee TO carol", "NOT FROM example",
    'HEADER From "renée"', "FROM example.test UNSEEN", "TO alice@example.test",
]


def program(text: str) -> Reader:
    return Reader(RawCommand((text.encode(),), ()))


@pytest.mark.parametrize("needle", NEEDLES)
def test_kept_texts_answer_as_the_header(needle: str) -> None:
    prog = parse_search(program(needle))
    assert prog.needs_fields_only
    ctx = SearchContext(len(TRICKY), len(TRICKY), frozenset())
    for i, data in enumerate(TRICKY, 1):
        meta = MessageMeta(i, i, len(data), 0.0, frozenset(), 1)
        read = Candidate(i, meta, False, data=data)
        kept = Candidate(i, meta, False, data=data).search_fields()
        if kept is None:  # NUL or separators: never kept, read each time
            assert b"\x00" in data or b"\x1e" in data
            continue
        from_store = Candidate(i, meta, False)  # no bytes at all
        from_store.use_search_fields(kept)
        assert matches(prog.key, from_store, ctx) == matches(prog.key, read, ctx), (needle, i)
        fast = prog.field_matcher()
        if fast is not None:
            assert fast(kept) == matches(prog.key, read, ctx), (needle, i)


def test_body_keys_still_read_the_message() -> None:
    for text in ("BODY x", "TEXT x", "SENTON 1-Jan-2020", "HEADER Sender x",
                 "FROM x OR BODY y SUBJECT z"):
        assert not parse_search(program(text)).needs_fields_only, text
    assert not parse_search(program("UNSEEN")).needs_fields_only  # no bytes needed at all


def _uids(resp: list[bytes]) -> list[int]:
    m = re.match(rb"\* SEARCH(.*)\r\n", resp[0])
    assert m is not None, resp
    return [int(x) for x in m.group(1).split()]


async def test_search_kept_fields_over_imap(imap_server: Server) -> None:
    """First search computes and keeps the texts, the second answers from them; both
    agree with the body path (``BODY ""`` matches every message and forces a read)."""
    async with connect(imap_server) as c:
        await c.login()
        for msg in TRICKY:
            resp = await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
            assert b"OK" in resp[-1]
        await c.cmd("SELECT INBOX")
        await c.cmd("STORE 1 +FLAGS (\\Seen)")
        for needle in NEEDLES:
            wire = needle.encode()
            read = _uids(await c.cmd(b"UID SEARCH CHARSET UTF-8 " + wire + b' BODY ""'))
            cold = _uids(await c.cmd(b"UID SEARCH CHARSET UTF-8 " + wire))
            warm = _uids(await c.cmd(b"UID SEARCH CHARSET UTF-8 " + wire))
            assert cold == warm == read, needle
        assert _uids(await c.cmd("SEARCH FROM sender17")) == [2]
        assert _uids(await c.cmd("SEARCH TO carol")) == [2]
        assert _uids(await c.cmd('SEARCH FROM "renee dupont"')) == []  # é is not e
        assert _uids(await c.cmd('SEARCH CHARSET UTF-8 FROM "RENÉE DUPONT"')) == [1]


def test_field_matcher_only_for_one_field_key() -> None:
    assert parse_search(program("FROM a")).field_matcher() is not None
    for text in ("FROM a UNSEEN", 'FROM ""', "NOT FROM a", "HEADER Sender a"):
        assert parse_search(program(text)).field_matcher() is None, text


def test_required_text() -> None:
    assert parse_search(program("FROM Ann SUBJECT hello")).required_text == "hello"
    assert parse_search(program("UNSEEN (TO Bob)")).required_text == "bob"
    for text in ("OR FROM a TO b", "NOT FROM a", 'FROM ""', "UNSEEN", "BODY x"):
        assert parse_search(program(text)).required_text is None, text


def _header_path(needle: str) -> list[int]:
    """UIDs (1-based positions in TRICKY) that reading each message's header matches."""
    prog = parse_search(program(needle))
    ctx = SearchContext(len(TRICKY), len(TRICKY), frozenset())
    return [i for i, data in enumerate(TRICKY, 1) if matches(
        prog.key, Candidate(i, MessageMeta(i, i, len(data), 0.0, frozenset(), 1), False,
                            data=data), ctx)]


def test_search_fields_of_is_the_candidates() -> None:
    """The keeper's texts (header bytes only) are the ones a search would keep."""
    for i, data in enumerate(TRICKY, 1):
        meta = MessageMeta(i, i, len(data), 0.0, frozenset(), 1)
        assert search_fields_of(data) == Candidate(i, meta, False, data=data).search_fields()


def test_kept_terms() -> None:
    assert parse_search(program("FROM Ann")).kept_terms() == [(0, "ann")]
    assert parse_search(program("TO b SUBJECT \"Caf\u00c9\"")).kept_terms() == [
        (1, "b"), (4, "caf\u00e9")]
    assert parse_search(program("FROM a FROM a TO b FROM a")).kept_terms() == [
        (0, "a"), (1, "b")]
    many = " ".join(f"FROM a{i}" for i in range(17))
    assert parse_search(program(many)).kept_terms() is None  # evaluated per message
    assert parse_search(program(" ".join(["FROM a"] * 1000))).kept_terms() == [(0, "a")]
    for text in ("FROM a UNSEEN", 'FROM ""', "NOT FROM a", "HEADER Sender a",
                 "OR FROM a TO b", "(FROM a UNSEEN) TO b", "BODY x", "ALL", "1:* FROM a"):
        assert parse_search(program(text)).kept_terms() is None, text


async def test_store_decides_as_the_header(store: MailStore) -> None:  # noqa: F811
    """On both backends: the keeper keeps the tricky messages' texts, and the store's
    answer (``kept_search_uids``) for each FROM/TO/CC/BCC/SUBJECT program is the header
    path's; the messages that cannot be kept come back to be read."""
    account = await store.add_account("k@example.test", "x", None)
    for data in TRICKY:
        await store.accept(data, Envelope(sender=""), [LocalTarget(account.id)])
    last, kept, more = await keep_once(store)
    assert kept == 3 and last > 0 and not more  # the NUL and the separators: never kept
    assert await keep_once(store, last) == (last, 0, False)
    # the two never kept come back, a full batch: more may follow
    assert await keep_once(store, 0, batch=2) == (last, 0, True)
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    unkeepable = [i for i, data in enumerate(TRICKY, 1) if search_fields_of(data) is None]
    assert unkeepable == [4, 5]
    decided = 0
    for needle in [*NEEDLES, "FROM renee TO bob", "TO alice CC eve", "SUBJECT café FROM x"]:
        terms = parse_search(program(needle)).kept_terms()
        if terms is None:
            continue
        decided += 1
        hits, unkept = await store.kept_search_uids(box.id, terms)
        assert unkept == unkeepable
        expected = [u for u in _header_path(needle) if u not in unkeepable]
        assert hits == expected, needle
    assert decided >= 20


async def test_keeper_keeps_sort_keys(store: MailStore) -> None:  # noqa: F811
    """On both backends: the keeper also keeps every message's SORT/THREAD keys (those
    without kept texts included), the keys SORT computes from the header itself, so the
    first SORT of a mailbox filled by delivery reads no message."""
    account = await store.add_account("s@example.test", "x", None)
    blobs = [(await store.accept(m, Envelope(sender=""), [LocalTarget(account.id)])).blob_id
             for m in TRICKY]
    assert await store.get_sort_keys(blobs) == {}
    await keep_once(store)
    kept = await store.get_sort_keys(blobs)
    expected = {b: compute_sort_keys(Headers(_split_header(m)[0]))
                for b, m in zip(blobs, TRICKY, strict=True)}
    # PostgreSQL's text cannot hold the NUL of the fourth: its keys are computed each time
    nul = blobs[3]
    assert "\x00" in expected[nul].subject
    assert kept.pop(nul, expected[nul]) == expected[nul]
    assert kept == {b: k for b, k in expected.items() if b != nul}
    assert kept[blobs[0]].display_from == "RENÉE DUPONT"  # decoded, as SORT=DISPLAY needs


async def test_keeper_keys_of_a_long_header_are_sorts(store: MailStore) -> None:  # noqa: F811
    """A message over 64 KB whose header runs past 64 KB: the keeper keeps the keys SORT
    computes from the first 64 KB it reads (kept orders mix keys of both)."""
    from pochta.server import imap_searchkeep, imap_sort

    assert imap_searchkeep.SORT_HEADER_READ == imap_sort.HEADER_READ
    account = await store.add_account("h@example.test", "x", None)
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 70) for i in range(900))
    data = (b"Subject: early\r\n" + filler + b"From: late@example.test\r\n"
            b"Subject: late\r\n\r\n" + b"body\r\n" * 20000)
    assert data.index(b"From: late") > imap_sort.HEADER_READ
    blob = (await store.accept(data, Envelope(sender=""), [LocalTarget(account.id)])).blob_id
    await keep_once(store)
    kept = (await store.get_sort_keys([blob]))[blob]
    sorts = compute_sort_keys(Headers(_split_header(data[:imap_sort.HEADER_READ])[0]))
    assert kept == sorts and kept.from_ == ""  # the From beyond 64 KB is not seen


async def test_keeper_keeps_new_messages_in_the_background(imap_server: Server) -> None:
    """An APPENDed message's texts are kept by the server's keeper shortly after, without
    any SEARCH; the answers stay the header path's."""
    async with connect(imap_server) as c:
        await c.login()
        for msg in TRICKY[:3]:
            resp = await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
            assert b"OK" in resp[-1]
        account = await imap_server.store.get_account("alice@example.test")
        assert account is not None
        box = await imap_server.store.get_mailbox(account.id, "INBOX")
        assert box is not None
        blobs = [m.blob_id for m in await imap_server.store.list_messages(box.id)]
        for _ in range(100):
            if len(await imap_server.store.get_search_fields(blobs)) == len(blobs):
                break
            await asyncio.sleep(0.05)
        assert len(await imap_server.store.get_search_fields(blobs)) == len(blobs)
        await c.cmd("SELECT INBOX")
        for needle in NEEDLES:
            if parse_search(program(needle)).kept_terms() is None:
                continue
            read = _uids(await c.cmd(b"UID SEARCH CHARSET UTF-8 " + needle.encode()
                                     + b' BODY ""'))
            assert _uids(await c.cmd(b"UID SEARCH CHARSET UTF-8 " + needle.encode())) == read


def test_the_store_knows_the_kept_parts() -> None:
    from pochta.proto.imap.search import SEARCH_FIELDS
    from pochta.storage.interfaces_imap import SEARCH_FIELD_PARTS

    assert len(SEARCH_FIELDS) == SEARCH_FIELD_PARTS


async def test_decided_by_the_store_answers_as_the_read_path(imap_server: Server) -> None:
    """ESEARCH (MIN MAX COUNT ALL), SEARCHRES and UIDs of the store-decided path are the
    read path's (``BODY ""`` makes a program read every message); a message delivered by
    another session is not in the answer before this session has been told of it."""
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        for msg in TRICKY * 3:
            resp = await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
            assert b"OK" in resp[-1]
        await c.cmd("SELECT INBOX")
        await c.cmd("STORE 2:4 +FLAGS (\\Deleted)")
        await c.cmd("EXPUNGE")
        for prefix in ("SEARCH RETURN (MIN MAX COUNT ALL)", "UID SEARCH RETURN (ALL COUNT)",
                       "SEARCH RETURN ()", "UID SEARCH"):
            for needle in ("FROM example.test", "TO carol", "SUBJECT folded", "FROM zoë",
                           "FROM renée SUBJECT café", "CC nobody"):
                ask = f"{prefix} CHARSET UTF-8 {needle}"
                fast = (await c.cmd(ask.encode()))[:-1]
                read = (await c.cmd((ask + ' BODY ""').encode()))[:-1]
                assert [re.sub(rb'TAG "[^"]*"', b"", x) for x in fast] == [
                    re.sub(rb'TAG "[^"]*"', b"", x) for x in read], ask
        await c.cmd("SEARCH RETURN (SAVE) TO bob")
        saved = _uids(await c.cmd("UID SEARCH UID $"))
        assert saved == _uids(await c.cmd('UID SEARCH TO bob BODY ""')) != []
        msg = TRICKY[0]
        resp = await other.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
        assert b"OK" in resp[-1]
        resp = await c.cmd("UID SEARCH FROM renée".encode())
        assert _uids(resp) == [1, 6, 11]  # 16 is announced after the answer (EXISTS)
        assert any(line.endswith(b" EXISTS\r\n") for line in resp)
        assert _uids(await c.cmd("UID SEARCH FROM renée".encode())) == [1, 6, 11, 16]


def test_decode_without_encoded_words_is_the_text() -> None:
    """``_decode`` returns a value without "=?" as it is: what decoding it gives."""
    import random
    from email.header import decode_header, make_header

    from pochta.proto.imap.search import _decode

    rnd = random.Random(7)
    alphabet = "ab =?\t\"<>@,;:\u00e9\x00\x1e\u65e5\r\n"
    for _ in range(5000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
        if "=?" not in value:
            assert _decode(value) == str(make_header(decode_header(value))), value


async def test_keeper_reads_only_the_header_of_a_big_message(
        store: MailStore) -> None:  # noqa: F811
    """A message over the batch size is streamed up to its header's end: its texts are
    the whole message's; a header longer than HEADER_MAX is left to SEARCH."""
    from pochta.server import imap_searchkeep

    account = await store.add_account("big@example.test", "x", None)
    head = b"From: Big <big@example.test>\r\nSubject: large\r\n\r\n"
    big = head + b"x" * (imap_searchkeep.BATCH_MAX_SIZE * 3) + b"\r\n"
    long_head = b"Subject: " + b"y" * (imap_searchkeep.HEADER_MAX + 10) + b"\r\n\r\nbody\r\n"
    blobs = [(await store.accept(m, Envelope(sender=""), [LocalTarget(account.id)])).blob_id
             for m in (big, long_head)]
    _, kept, _ = await keep_once(store)
    assert kept == 1
    assert await store.get_search_fields(blobs) == {blobs[0]: search_fields_of(big)}


async def test_one_keeper_works_at_a_time(store: MailStore) -> None:  # noqa: F811
    """Two keepers on one store (two workers, two nodes): only the lock holder reads
    and writes texts; when it stops, the other takes over and keeps what came since."""
    from pochta.server import imap_searchkeep

    calls: dict[str, int] = {"a": 0, "b": 0}

    class Counting:
        def __init__(self, name: str) -> None:
            self.name = name

        def __getattr__(self, attr: str) -> object:
            if attr == "unkept_search_blobs":
                calls[self.name] += 1
            return getattr(store, attr)

    account = await store.add_account("keep@example.test", "x", None)

    async def deliver(i: int) -> int:
        data = b"From: n%d@example.org\r\nSubject: s%d\r\n\r\nbody\r\n" % (i, i)
        meta = await store.accept(data, Envelope(sender=""), [LocalTarget(account.id)])
        return meta.blob_id

    async def kept(blobs: list[int]) -> bool:
        for _ in range(200):
            if len(await store.get_search_fields(blobs)) == len(blobs):
                return True
            await asyncio.sleep(0.02)
        return False

    first = [await deliver(i) for i in range(3)]
    a = asyncio.create_task(imap_searchkeep.keep_forever(
        Counting("a"), interval=0.02, owner="a", lease=0.6))  # type: ignore[arg-type]
    assert await kept(first)
    b = asyncio.create_task(imap_searchkeep.keep_forever(
        Counting("b"), interval=0.02, owner="b", lease=0.6))  # type: ignore[arg-type]
    second = [await deliver(i) for i in range(3, 6)]
    assert await kept(second)
    await asyncio.sleep(0.5)  # b has asked for the lock at least twice meanwhile
    assert calls["a"] > 0 and calls["b"] == 0
    a.cancel()  # a stops and gives the lock back: b takes over within a third of a lease
    with pytest.raises(asyncio.CancelledError):
        await a
    third = [await deliver(i) for i in range(6, 9)]
    assert await kept(third)
    assert calls["b"] > 0
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
