"""ENVELOPE, BODYSTRUCTURE, sections, FETCH rendering and SEARCH evaluation (pure)."""

from __future__ import annotations

import pytest

from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.fetch import FetchOptions, parse_fetch, render
from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.search import Candidate, SearchContext, matches, parse_search
from pochta.storage.interfaces import MessageMeta

MULTI = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>\r\n"
    b"To: team: a@example.test, \"B, b\" <b@example.test>;, c@example.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Tue, 1 Mar 2022 10:00:00 +0100\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 au lait\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream; name=\"x.bin\"\r\n"
    b"Content-Disposition: attachment; filename=\"x.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"From: x@example.test\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)


def rd(text: str) -> Reader:
    return Reader(RawCommand((text.encode(),), ()))


def test_envelope_groups_and_defaults() -> None:
    env = bs.envelope(bs.parse(MULTI))
    assert env.startswith(b'("Tue, 1 Mar 2022 10:00:00 +0100" "=?utf-8?q?Gr=C3=BC=C3=9Fe?="')
    assert b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.test"))' in env
    # Sender and Reply-To default to From (RFC 9051 §7.5.2)
    assert env.count(b'"jorg" "example.test"') == 3
    assert (b'((NIL NIL "team" NIL) (NIL NIL "a" "example.test") ("B, b" NIL "b" '
            b'"example.test") (NIL NIL NIL NIL) (NIL NIL "c" "example.test"))') in env


def test_bodystructure_multipart() -> None:
    part = bs.parse(MULTI)
    body = bs.bodystructure(part)
    # 0 lines: the part has no line end of its own (its CRLF belongs to the boundary);
    # Dovecot counts the same way (imaptest urlauth-binary)
    assert body.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 17 0')
    assert b'("ATTACHMENT" ("FILENAME" "x.bin"))' in body
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 50 (NIL "inner"' in body
    assert body.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)')
    assert b"ATTACHMENT" not in bs.bodystructure(part, extended=False)


def test_sections() -> None:
    p = bs.parse(MULTI)
    assert bs.section_bytes(p, (1,), "") == b"caf=C3=A9 au lait"
    assert (bs.section_bytes(p, (1,), "MIME") or b"").startswith(b"Content-Type: text/plain")
    assert bs.section_bytes(p, (3,), "HEADER") == b"Subject: inner\r\nFrom: x@example.test\r\n\r\n"
    assert bs.section_bytes(p, (3, 1), "") == b"inner body"
    assert bs.section_bytes(p, (9,), "") is None
    assert bs.section_bytes(p, (), "HEADER.FIELDS.NOT", ("to", "from", "date", "content-type")) \
        == b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n"
    assert bs.binary_section(p, (1,)) == "café au lait".encode()
    assert bs.binary_section(p, (2,)) == b"\x00\x01\x02\x03"


@pytest.mark.parametrize("data", [
    b"", b"no header at all", b"\r\n\r\n", b"Content-Type: multipart/mixed\r\n\r\nno boundary",
    b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nunterminated",
    b"Content-Type: message/rfc822\r\n\r\n", b"Content-Type: text/plain; charset=\"\xff\"\r\n\r\nx",
    b"Content-Type: ;;;\r\nContent-Disposition: ;\r\n\r\n", b"\xff\xfe\x00:\r\n\r\n",
])
def test_malformed_mime_never_raises(data: bytes) -> None:
    p = bs.parse(data)
    assert bs.bodystructure(p).startswith(b"(")
    assert bs.envelope(p).startswith(b"(")


def test_deep_nesting_is_bounded() -> None:
    data = b""
    for i in range(200):
        data += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    p = bs.parse(data)
    assert bs.bodystructure(p).startswith(b"(")


META = MessageMeta(uid=7, blob_id=1, size=len(MULTI), internaldate=837596665.0,
                   flags=frozenset({"\\Seen"}), modseq=12)


def test_fetch_parse_and_render() -> None:
    req = parse_fetch(rd("(UID FLAGS BODY.PEEK[1.MIME] BODY[3.HEADER.FIELDS (Subject)]<0.5> "
                         "BINARY[2] BINARY.SIZE[2] RFC822.SIZE)"))
    assert req.needs_body and req.sets_seen
    out = render(3, META, req, MULTI, recent=True, opts=FetchOptions(condstore=True))
    assert out.startswith(b"* 3 FETCH (UID 7 FLAGS (\\Recent \\Seen) BODY[1.MIME] {")
    assert b"BODY[3.HEADER.FIELDS (SUBJECT)]<0> {5}\r\nSubje" in out
    assert b"BINARY[2] ~{4}\r\n\x00\x01\x02\x03" in out
    assert b"BINARY.SIZE[2] 4" in out and b"MODSEQ (12)" in out
    assert out.endswith(b")\r\n")


def test_fetch_macros_and_errors() -> None:
    assert [a.name for a in parse_fetch(rd("FAST")).atts] == ["FLAGS", "INTERNALDATE",
                                                              "RFC822.SIZE"]
    assert parse_fetch(rd("(FLAGS) (CHANGEDSINCE 5)")).changedsince == 5
    for bad in ("BODY[", "(FLAGS", "BODY[MIME]", "NOPE", "BINARY[TEXT]", "BODY[1]<1>"):
        with pytest.raises(ParseError):
            parse_fetch(rd(bad))


def cand(seq: int = 1, data: bytes = MULTI, meta: MessageMeta = META) -> Candidate:
    return Candidate(seq, meta, recent=False, data=data)


@pytest.mark.parametrize(("query", "expected"), [
    ("ALL", True), ("SEEN", True), ("UNSEEN", False), ("SUBJECT grüße", True),
    ("FROM jörg", True), ("TO b@example", True), ("BODY \"CAFÉ AU\"", True),
    ("TEXT inner", True), ("BODY nothere", False), ("HEADER Content-Type mixed", True),
    ("LARGER 10", True), ("SMALLER 10", False), ("SENTON 1-Mar-2022", True),
    ("SENTBEFORE 1-Mar-2022", False), ("ON 17-Jul-1996", True), ("SINCE 18-Jul-1996", False),
    ("OR UNSEEN UID 7", True), ("NOT (SEEN UID 1:6)", True), ("UID 8:*", True),
    ("UID 1:6", False), ("1", True), ("2:5", False), ("2:*", True), ("MODSEQ 12", True),
    ("MODSEQ 13", False),
    ("KEYWORD $Junk", False), ("UNKEYWORD $Junk", True), ("NEW", False), ("OLD", True),
])
def test_search(query: str, expected: bool) -> None:
    prog = parse_search(rd(query))
    assert matches(prog.key, cand(), SearchContext(count=1, top_uid=7)) is expected


def test_search_parse_errors_and_return() -> None:
    prog = parse_search(rd("RETURN (MIN COUNT SAVE) CHARSET UTF-8 UNSEEN"))
    assert prog.returns == ["MIN", "COUNT", "SAVE"]
    for bad in ("", "FOO", "OR SEEN", "SINCE 1-Foo-2020", "(SEEN", "RETURN (BAD) ALL",
                "SEEN )"):
        with pytest.raises(ParseError):
            parse_search(rd(bad))


def test_sequence_sets_of_many_ranges_are_searched_by_bisection() -> None:
    """A set of thousands of ranges used to be walked for every message: 10,000 ranges
    over 10,000 messages took tens of seconds of CPU."""
    import dataclasses
    import random
    import time

    rng = random.Random(7)
    count = 10_000
    picked = sorted(rng.sample(range(1, count + 1), 5000))
    text = ",".join(str(n) for n in picked)
    for query, numbers in ((text, set(picked)), (f"UID {text}", set(picked)),
                           ("5:3,9000:*,2", {2, 3, 4, 5, *range(9000, count + 1)}),
                           ("UID *:9998", {9998, 9999, 10000})):
        prog = parse_search(Reader(RawCommand((query.encode(),), ())))
        ctx = SearchContext(count=count, top_uid=count)
        t0 = time.monotonic()
        hits = {n for n in range(1, count + 1)
                if matches(prog.key, Candidate(n, dataclasses.replace(META, uid=n), False), ctx)}
        assert time.monotonic() - t0 < 2.0, query[:40]
        assert hits == numbers, query[:40]
