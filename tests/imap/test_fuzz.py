"""Garbage never raises out of the core and never kills a session."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st_

from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.fetch import parse_fetch
from pochta.proto.imap.framer import Framer, RawCommand
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.search import parse_search
from pochta.proto.imap.seqset import parse_seqset
from tests.conftest import Server
from tests.imap.helpers import connect

TOKENS = [b"(", b")", b"[", b"]", b"<", b">", b"{3}", b"{2+}", b"\"", b"\\", b" ", b"*", b"$",
          b"1", b"1:*", b"BODY", b"BODY[", b"HEADER.FIELDS", b"OR", b"NOT", b"UID", b"FLAGS",
          b"~{1}", b"\r\n", b"\x00", b"\xff", b"%", b"NIL", b"CHARSET", b"RETURN", b"."]

fragments = st_.lists(st_.sampled_from(TOKENS) | st_.binary(max_size=5), max_size=30).map(
    b"".join)


@settings(max_examples=300, deadline=None)
@given(fragments)
def test_framer_and_parsers_only_raise_parse_error(data: bytes) -> None:
    f = Framer(max_line=200, literal_limit=lambda so_far, n: b"BAD big" if n > 50 else None)
    f.feed(data + b"\r\n")
    while (ev := f.next_event()) is not None:
        if not isinstance(ev, RawCommand):
            continue
        for parse in (parse_fetch, parse_search, parse_seqset):
            with contextlib.suppress(ParseError):
                parse(Reader(ev))


@settings(max_examples=300, deadline=None)
@given(st_.lists(st_.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
    b"\r\n", b"--b\r\n", b"--b--\r\n", b"To: a@b, (c) <d@e>; g: ;\r\n", b"x", b"\xff",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Disposition: a; b*=''x\r\n",
    b" folded\r\n", b"Subject: \x00\r\n"]), max_size=25).map(b"".join))
def test_mime_never_raises(data: bytes) -> None:
    p = bs.parse(data)
    bs.bodystructure(p)
    bs.envelope(p)
    for path in ((), (1,), (1, 1), (2, 1)):
        for text in ("", "HEADER", "TEXT", "MIME"):
            if path or text != "MIME":
                bs.section_bytes(p, path, text)
        with contextlib.suppress(bs.UnknownCTE):
            bs.binary_section(p, path)


async def test_session_survives_random_garbage(imap_server: Server) -> None:
    from tests.imap.test_session_mail import deliver

    await deliver(imap_server)
    await deliver(imap_server)
    rng = random.Random(1234)
    async with connect(imap_server) as c:
        await c.login()
        await c.cmd("SELECT INBOX")
        for i in range(300):
            words = [rng.choice(TOKENS) for _ in range(rng.randint(0, 6))]
            body = b"".join(words).replace(b"\r\n", b"").replace(b"{", b"(")
            cmd = rng.choice([b"FETCH", b"SEARCH", b"STORE", b"LIST", b"UID FETCH", b"COPY"])
            resp = await c.cmd(cmd + b" " + body)
            assert resp[-1].split(b" ")[1] in (b"OK", b"NO", b"BAD"), resp
            assert b"SERVERBUG" not in resp[-1], (cmd, body, resp)
            if i % 5 == 4:
                await c.cmd("NOOP")  # a success resets the errors-in-a-row count
        # still alive and well
        resp = await c.cmd("NOOP")
        assert resp[-1].split(b" ")[1] in (b"OK", b"BAD")
