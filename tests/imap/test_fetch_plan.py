"""FetchPlan (the FETCH request sorted out once per command) renders every message as the
per-message code it replaced did: random requests of every item kind, with duplicates,
UIDONLY, CONDSTORE, \\Seen just set, on messages of every MIME shape."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.fetch import (
    FetchOptions,
    FetchPlan,
    FetchRequest,
    _flags,
    _partial,
    _section_name,
    parse_fetch,
    preview,
    render,
    render_items,
)
from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import Reader
from pochta.proto.imap.response import internaldate, literal, quoted_or_literal
from pochta.proto.imap.search import email_id
from pochta.storage.interfaces import MessageMeta

ITEMS = [
    "FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE",
    "BODY", "SAVEDATE", "EMAILID", "THREADID", "PREVIEW", "RFC822", "RFC822.HEADER",
    "RFC822.TEXT", "BODY[]", "BODY.PEEK[TEXT]", "BODY[HEADER]", "BODY[1]", "BODY[1.MIME]",
    "BODY[2]", "BODY[HEADER.FIELDS (From Subject)]", "BODY[HEADER.FIELDS.NOT (To)]",
    "BODY[]<5.20>", "BODY[1]<0.3>", "BINARY[1]", "BINARY[]", "BINARY.SIZE[1]",
    "BINARY.SIZE[2]", "FAST", "ALL", "FULL",
]

MESSAGES = [
    b"From: A <a@example.test>\r\nTo: b@example.test\r\nSubject: plain\r\n\r\nHello\r\n",
    b"From: a@example.test\r\nSubject: multi\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=xx\r\n\r\n--xx\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\n\r\ncaf=C3=A9\r\n--xx\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--xx--\r\n",
    b"Subject: no body",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: i@example.test\r\n\r\n"
    b"inner body\r\n",
]


def _reference_items(
    meta: MessageMeta,
    req: FetchRequest,
    data: bytes | None,
    recent: bool,
    opts: FetchOptions,
    extra_flags: bool = False,
    part: bs.Part | None = None,
) -> list[bytes]:
    """The per-message rendering before FetchPlan (3af1b5b), as the oracle."""
    items: list[bytes] = []
    done: set[str] = set()

    def parsed() -> bs.Part:
        nonlocal part
        if part is None:
            part = bs.parse(data or b"")
        return part

    def memo(name: str, make: Callable[[bs.Part], bytes]) -> bytes:
        # a cached Part (the server keeps recently parsed messages) renders these once
        p = parsed()
        key = (name, opts.utf8)
        value = p.memo.get(key)
        if value is None:
            value = p.memo[key] = make(p)
        return value

    def add_once(name: str, value: bytes) -> None:
        if name not in done:
            done.add(name)
            items.append(name.encode() + b" " + value)

    for a in req.atts:
        if a.name == "FLAGS":
            add_once("FLAGS", _flags(meta, recent, opts))
        elif a.name == "UID":
            if not opts.uidonly:  # the response's number is the UID (RFC 9586 §3.3)
                add_once("UID", b"%d" % meta.uid)
        elif a.name == "INTERNALDATE":
            add_once("INTERNALDATE", internaldate(meta.internaldate))
        elif a.name == "RFC822.SIZE":
            add_once("RFC822.SIZE", b"%d" % meta.size)
        elif a.name == "MODSEQ":
            add_once("MODSEQ", b"(%d)" % meta.modseq)
        elif a.name == "ENVELOPE":
            add_once("ENVELOPE", memo("ENVELOPE", lambda p: bs.envelope(p, opts.utf8)))
        elif a.name == "BODYSTRUCTURE":
            add_once("BODYSTRUCTURE", memo(
                "BODYSTRUCTURE", lambda p: bs.bodystructure(p, True, opts.utf8)))
        elif a.name == "BODY" and not a.section:
            add_once("BODY", memo("BODY", lambda p: bs.bodystructure(p, False, opts.utf8)))
        elif a.name == "SAVEDATE":
            add_once("SAVEDATE", internaldate(opts.save_dates.get(meta.uid, meta.internaldate)))
        elif a.name == "EMAILID":
            add_once("EMAILID", b"(%s)" % email_id(meta).encode())
        elif a.name == "THREADID":
            add_once("THREADID", b"NIL")  # RFC 8474 §5.2: no thread ids
        elif a.name == "PREVIEW":
            add_once("PREVIEW", memo("PREVIEW", lambda p: quoted_or_literal(
                preview(p), opts.utf8)))
        elif a.name == "RFC822":
            add_once("RFC822", literal(data if data is not None else parsed().raw))
        elif a.name == "RFC822.HEADER":
            add_once("RFC822.HEADER", literal(parsed().header))
        elif a.name == "RFC822.TEXT":
            add_once("RFC822.TEXT", literal(parsed().body))
        elif a.name == "BODY":
            section = bs.section_bytes(parsed(), a.path, a.text, a.headers)
            key = _section_name(a)
            if section is None:
                items.append(key + b" NIL")
                continue
            chunk, origin = _partial(section, a)
            items.append(key + origin + b" " + literal(chunk))
        elif a.name == "BINARY":
            section = bs.binary_section(parsed(), a.path)
            key = _section_name(a)
            if section is None:
                items.append(key + b" NIL")
                continue
            chunk, origin = _partial(section, a)
            prefix = b"~" if b"\x00" in chunk else b""  # literal8 (RFC 3516 §4.2)
            items.append(key + origin + b" " + prefix + literal(chunk))
        elif a.name == "BINARY.SIZE":
            section = bs.binary_section(parsed(), a.path)
            items.append(_section_name(a) + b" " + (
                b"NIL" if section is None else b"%d" % len(section)))
    if extra_flags:
        add_once("FLAGS", _flags(meta, recent, opts))
    if opts.condstore:
        add_once("MODSEQ", b"(%d)" % meta.modseq)
    return items



def _request(text: str) -> FetchRequest:
    return parse_fetch(Reader(RawCommand((text.encode(),), ())))


@pytest.mark.parametrize("seed", range(40))
def test_plan_renders_as_the_per_message_code(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        names = [rng.choice(ITEMS) for _ in range(rng.randrange(1, 7))]
        if any(n in ("FAST", "ALL", "FULL") for n in names):
            names = [next(n for n in names if n in ("FAST", "ALL", "FULL"))]
        req = _request("(" + " ".join(names) + ")" if len(names) > 1 else names[0])
        opts = FetchOptions(utf8=rng.random() < 0.5, rev1_recent=rng.random() < 0.5,
                            condstore=rng.random() < 0.5, uidonly=rng.random() < 0.3)
        opts.save_dates = {7: 1_700_000_123.0} if rng.random() < 0.5 else {}
        plan = FetchPlan(req, opts)
        for data in MESSAGES:
            meta = MessageMeta(7, 11, len(data), 1_700_000_000.0,
                               frozenset(rng.sample(["\\Seen", "$Junk", "\\Flagged"],
                                                    rng.randrange(3))), 42)
            recent, extra = rng.random() < 0.5, rng.random() < 0.5
            # with the bytes, with a parsed message, with both
            for given_data, part in ((data, None), (None, bs.parse(data)),
                                     (data, bs.parse(data))):
                try:
                    want = _reference_items(meta, req, given_data, recent, opts, extra, part)
                except bs.UnknownCTE:
                    with pytest.raises(bs.UnknownCTE):
                        plan.items(meta, given_data, recent, extra, part)
                    continue
                got = plan.items(meta, given_data, recent, extra, part)
                assert got == want, (names, opts)
                assert render_items(meta, req, given_data, recent, opts, extra, part) == want
                line = plan.render(3, meta, given_data, recent, extra, part)
                assert line == render(3, meta, req, given_data, recent, opts, extra, part)
                assert line.endswith(b")\r\n") and b" ".join(want) in line
