"""Sans-IO core: framer, parser, sequence sets, mUTF-7, responses."""

from __future__ import annotations

import pytest

from pochta.proto.imap.framer import (
    CommandSoFar,
    Framer,
    FramingError,
    NeedContinuation,
    RawCommand,
)
from pochta.proto.imap.mutf7 import decode_mutf7, encode_mutf7
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.response import astring, internaldate, quoted_or_literal, seq_set
from pochta.proto.imap.seqset import parse_seqset_text


def events(f: Framer) -> list[object]:
    out: list[object] = []
    while (ev := f.next_event()) is not None:
        out.append(ev)
    return out


def test_simple_line_and_partial_input() -> None:
    f = Framer()
    f.feed(b"a1 NOO")
    assert events(f) == []
    f.feed(b"P\r\na2 CAPABILITY\n")
    assert events(f) == [RawCommand((b"a1 NOOP",), ()), RawCommand((b"a2 CAPABILITY",), ())]


def test_synchronizing_literal_asks_for_continuation() -> None:
    f = Framer()
    f.feed(b"a LOGIN {5}\r\n")
    assert events(f) == [NeedContinuation()]
    f.feed(b"alice {3}\r\n")
    assert events(f) == [NeedContinuation()]
    f.feed(b"pw!\r\n")
    assert events(f) == [RawCommand((b"a LOGIN {5}", b" {3}", b""), (b"alice", b"pw!"))]


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    f = Framer()
    f.feed(b"a APPEND INBOX {3+}\r\nabc\r\n")
    assert events(f) == [RawCommand((b"a APPEND INBOX {3+}", b""), (b"abc",))]


def test_literal_may_contain_crlf_and_literal_markers() -> None:
    f = Framer()
    f.feed(b"a APPEND INBOX {7+}\r\nx {2}\r\n\r\n")
    (cmd,) = events(f)
    assert isinstance(cmd, RawCommand) and cmd.literals == (b"x {2}\r\n",)


def test_line_too_long_is_refused_and_rest_discarded() -> None:
    f = Framer(max_line=100)
    f.feed(b"a1 NOOP " + b"x" * 200)
    (ev,) = events(f)
    assert isinstance(ev, FramingError) and ev.tag == b"a1" and b"too long" in ev.response
    f.feed(b"yyy\r\na2 NOOP\r\n")
    assert events(f) == [RawCommand((b"a2 NOOP",), ())]


def test_huge_sync_literal_refused_before_upload() -> None:
    f = Framer(literal_limit=lambda so_far, n: b"NO [TOOBIG] too big" if n > 10 else None)
    f.feed(b"a7 APPEND INBOX {999999999}\r\n")
    (ev,) = events(f)
    assert isinstance(ev, FramingError) and ev.response.startswith(b"NO [TOOBIG]")
    assert not ev.close  # nothing was uploaded: the connection stays usable
    f.feed(b"a8 NOOP\r\n")
    assert events(f) == [RawCommand((b"a8 NOOP",), ())]


def test_huge_non_sync_literal_closes() -> None:
    f = Framer(literal_limit=lambda so_far, n: b"BAD too big" if n > 10 else None)
    f.feed(b"a7 APPEND INBOX {999999+}\r\n")
    (ev,) = events(f)
    assert isinstance(ev, FramingError) and ev.close


def reader(*lines: bytes, literals: tuple[bytes, ...] = (), utf8: bool = True) -> Reader:
    return Reader(RawCommand(lines, literals), utf8=utf8)


def test_reader_tokens() -> None:
    r = reader(b'a1 LOGIN "al\\"ice" {3}', b"", literals=(b"p w",))
    assert r.tag() == "a1"
    r.sp()
    assert r.atom() == "LOGIN"
    r.sp()
    assert r.astring() == 'al"ice'
    r.sp()
    assert r.astring() == "p w"
    r.end()


def test_reader_rejects_nul_and_bad_utf8() -> None:
    with pytest.raises(ParseError):
        reader(b"a1 SELECT a\x00b")
    with pytest.raises(ParseError):
        reader(b"a1 SELECT \xff\xfe")
    r = reader(b"a1 {2}", b"", literals=(b"\xff\xfe",))
    r.tag()
    r.sp()
    with pytest.raises(ParseError):
        r.astring()


def test_mailbox_inbox_case_and_mutf7() -> None:
    assert reader(b"inbox").mailbox() == "INBOX"
    assert reader(b"Inbox/Sub").mailbox() == "INBOX/Sub"
    assert reader(b'"&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"', utf8=False).mailbox() == "Отправленные"
    assert encode_mutf7("Отправленные") == "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"
    assert encode_mutf7("a&b") == "a&-b" and decode_mutf7("a&-b") == "a&b"
    assert decode_mutf7("&bad") == "&bad"


def test_date_time_parse() -> None:
    assert reader(b'"17-Jul-1996 02:44:25 -0700"').date_time() == 837596665.0
    with pytest.raises(ParseError):
        reader(b'"31-Foo-1996 02:44:25 -0700"').date_time()
    assert internaldate(837596665.0) == b'"17-Jul-1996 09:44:25 +0000"'


def test_seqset() -> None:
    s = parse_seqset_text("1:3,5,*")
    assert s.seqs(6) == [1, 2, 3, 5, 6]
    assert s.uids([2, 3, 10, 20]) == [2, 3, 20]
    assert parse_seqset_text("4:2").seqs(5) == [2, 3, 4]
    with pytest.raises(ParseError):
        parse_seqset_text("7").seqs(5)
    with pytest.raises(ParseError):
        parse_seqset_text("0")
    assert parse_seqset_text("$").saved
    assert parse_seqset_text("30:*").uids([2, 3, 10]) == [10]  # RFC 9051 §6.4.8
    assert seq_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"


def test_strings() -> None:
    assert quoted_or_literal("plain") == b'"plain"'
    assert quoted_or_literal('a"b') == b'"a\\"b"'
    assert quoted_or_literal("ü") == b"{2}\r\n\xc3\xbc"
    assert quoted_or_literal("ü", utf8=True) == b'"\xc3\xbc"'
    assert quoted_or_literal("a\r\nb") == b"{4}\r\na\r\nb"
    assert astring("INBOX") == b"INBOX" and astring("a b") == b'"a b"' and astring("") == b'""'


def test_literal_limit_sees_the_command_so_far() -> None:
    """The limit is asked before each literal is buffered, with the count and bytes of
    the command so far, so a command of many literals can be stopped part-way."""
    seen: list[CommandSoFar] = []

    def limit(so_far: CommandSoFar, n: int) -> bytes | None:
        seen.append(so_far)
        return b"BAD [TOOBIG] Command too large" if so_far.size + n > 60 else None

    f = Framer(literal_limit=limit)
    f.feed(b"a1 SEARCH TEXT {5+}\r\nhello TEXT {10+}\r\n0123456789 TEXT {10+}\r\n"
           b"abcdefghij\r\n")
    ev = f.next_event()
    assert isinstance(ev, FramingError) and ev.close and ev.tag == b"a1"
    assert [(x.literals, x.largest) for x in seen] == [(0, 0), (1, 5), (2, 10)]
    assert seen[1].size == len(b"a1 SEARCH TEXT {5+}\r\n") + 5 + len(b" TEXT {10+}\r\n")
    # the third literal was refused unread: its bytes are still in the buffer, not a command
    assert f.buffered == len(b"abcdefghij\r\n")


def test_search_program_and_header_list_limits() -> None:
    from pochta.proto.imap.fetch import MAX_HEADER_FIELDS, parse_fetch
    from pochta.proto.imap.search import MAX_SEARCH_KEYS, parse_search

    parse_search(reader(" ".join(["ALL"] * MAX_SEARCH_KEYS).encode()))
    with pytest.raises(ParseError, match="at most 1000 keys"):
        parse_search(reader(" ".join(["ALL"] * (MAX_SEARCH_KEYS + 1)).encode()))
    with pytest.raises(ParseError, match="at most 1000 keys"):  # NOT and OR count too
        parse_search(reader(" ".join(["NOT SEEN"] * 501).encode()))
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_search(reader(b"(" * 60 + b"ALL" + b")" * 60))
    names = " ".join(["X-A"] * MAX_HEADER_FIELDS)
    parse_fetch(reader(f"BODY.PEEK[HEADER.FIELDS ({names})]".encode()))
    with pytest.raises(ParseError, match="at most 1000 items"):
        parse_fetch(reader(f"BODY.PEEK[HEADER.FIELDS ({names} X-B)]".encode()))


def test_parsing_many_strings_is_linear() -> None:
    """Each string used to search the whole line for a literal: 30,000 names took ~20 s."""
    import time

    line = b"(" + b" ".join([b"a"] * 30000) + b")"
    t0 = time.monotonic()
    assert len(reader(line).paren_list(limit=100000)) == 30000
    assert time.monotonic() - t0 < 1.0
