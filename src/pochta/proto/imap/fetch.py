"""FETCH data items: parsing the request (RFC 9051 §6.4.5) and rendering the response
(§7.5.2), pure: the caller supplies message metadata and, when needed, the message bytes."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pochta.mail.model import MessageMeta
from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.response import flags as fmt_flags
from pochta.proto.imap.response import internaldate, literal, quoted_or_literal
from pochta.proto.imap.search import email_id, parse_partial, text_of

_NAME_RE = re.compile(r"[A-Za-z0-9.]+")
# header names in one HEADER.FIELDS list: clients ask for a few dozen; a list of thousands
# only makes the server work (ParseError: BAD with the limit in the text)
MAX_HEADER_FIELDS = 1000
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = {
    "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID",
    "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "SAVEDATE", "EMAILID", "THREADID",
    "PREVIEW",
}


@dataclass(frozen=True, slots=True)
class FetchAtt:
    name: str  # FLAGS, BODY, BINARY, BINARY.SIZE, ...
    section: bool = False  # has a [section]
    path: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    headers: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def needs_body(self) -> bool:
        return self.name not in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "UID", "MODSEQ",
                                 "SAVEDATE", "EMAILID", "THREADID")



    @property
    def sets_seen(self) -> bool:
        return (self.name in ("BODY", "BINARY") and self.section and not self.peek) or (
            self.name in ("RFC822", "RFC822.TEXT")
        )


@dataclass(slots=True)
class FetchRequest:
    atts: list[FetchAtt] = field(default_factory=list)
    changedsince: int | None = None
    vanished: bool = False
    partial: tuple[int, int] | None = None  # the PARTIAL modifier (RFC 9394 §3.2)

    @property
    def needs_body(self) -> bool:
        return any(a.needs_body for a in self.atts)

    @property
    def sets_seen(self) -> bool:
        return any(a.sets_seen for a in self.atts)

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.atts)


def _section(r: Reader, binary: bool) -> tuple[tuple[int, ...], str, tuple[str, ...]]:
    path: list[int] = []
    text = ""
    headers: tuple[str, ...] = ()
    if r.accept("]"):
        return (), "", ()
    while r.peek().isdigit():
        path.append(r.number(nonzero=True))
        if not r.accept("."):
            break
    if r.peek() != "]":
        if binary:
            raise ParseError("BINARY takes part numbers only")
        m = _NAME_RE.match(r.line, r.pos)
        word = m.group(0).upper() if m else ""
        if word not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError("bad section")
        if word == "MIME" and not path:
            raise ParseError("MIME needs a part number")
        r.pos += len(word)
        text = word
        if word.startswith("HEADER.FIELDS"):
            r.sp()
            headers = tuple(r.paren_list(MAX_HEADER_FIELDS))
            if not headers:
                raise ParseError("empty header list")
    r.expect("]")
    return tuple(path), text, headers


def _att(r: Reader) -> list[FetchAtt]:
    m = _NAME_RE.match(r.line, r.pos)
    if not m:
        raise ParseError("expected a fetch attribute")
    name = m.group(0).upper()
    r.pos = m.end()
    if name in _MACROS:
        return [FetchAtt(n) for n in _MACROS[name]]
    peek = name.endswith(".PEEK")
    base = name[:-5] if peek else name
    if base in ("BODY", "BINARY", "BINARY.SIZE") and r.peek() == "[":
        r.pos += 1
        path, text, headers = _section(r, binary=base != "BODY")
        partial = None
        if base != "BINARY.SIZE" and r.accept("<"):
            origin = r.number()
            r.expect(".")
            count = r.number(nonzero=True)
            r.expect(">")
            partial = (origin, count)
        return [FetchAtt(base, True, path, text, headers, partial, peek)]
    if peek or name not in _SIMPLE:
        raise ParseError(f"unknown fetch attribute {name}")
    if name == "PREVIEW" and r.accept(" (LAZY)"):  # RFC 8970 §3.1: we always compute
        pass
    return [FetchAtt(name)]


def parse_att_list(r: Reader) -> list[FetchAtt]:
    """ "(" fetch-att *(SP fetch-att) ")": also NOTIFY's MessageNew list (RFC 5465 §8)."""
    r.expect("(")
    atts: list[FetchAtt] = []
    while True:
        atts += _att(r)
        if r.accept(")"):
            return atts
        r.sp()


def parse_fetch(r: Reader) -> FetchRequest:
    """After "FETCH seqset SP": the attributes and optional modifiers (RFC 7162 §3.1.4)."""
    req = FetchRequest()
    if r.peek() == "(":
        req.atts += parse_att_list(r)
    else:
        req.atts += _att(r)
    if r.maybe_sp():
        r.expect("(")
        while True:
            mod = r.atom().upper()
            if mod == "CHANGEDSINCE":
                r.sp()
                req.changedsince = r.number()
            elif mod == "VANISHED":
                req.vanished = True
            elif mod == "PARTIAL":
                r.sp()
                req.partial = parse_partial(r)
            else:
                raise ParseError(f"unknown FETCH modifier {mod}")
            if r.accept(")"):
                break
            r.sp()
    r.end()
    return req


@dataclass(slots=True)
class FetchOptions:
    utf8: bool = False  # UTF8=ACCEPT enabled: 8-bit strings may be quoted
    rev1_recent: bool = True  # show \Recent (IMAP4rev1 only)
    condstore: bool = False  # add MODSEQ (RFC 7162 §3.1.4.1)
    save_dates: dict[int, float] = field(default_factory=dict)  # uid -> SAVEDATE (RFC 8514)
    uidonly: bool = False  # UIDONLY (RFC 9586): "* uid UIDFETCH (...)", no UID item


@functools.lru_cache(maxsize=256)  # the same few items, for every message of a FETCH
def _section_name(a: FetchAtt) -> bytes:
    spec = ".".join(str(n) for n in a.path)
    if a.text:
        spec = f"{spec}.{a.text}" if spec else a.text
        if a.headers:
            spec += " (" + " ".join(h.upper() for h in a.headers) + ")"
    return f"{a.name}[{spec}]".encode()


def _partial(data: bytes, a: FetchAtt) -> tuple[bytes, bytes]:
    if a.partial is None:
        return data, b""
    origin, count = a.partial
    return data[origin : origin + count], b"<%d>" % origin


def render(
    seq: int,
    meta: MessageMeta,
    req: FetchRequest,
    data: bytes | None,
    recent: bool,
    opts: FetchOptions,
    extra_flags: bool = False,
    part: bs.Part | None = None,
) -> bytes:
    """One ``* seq FETCH (...)`` response. ``data`` or ``part`` is required when
    ``req.needs_body``; ``part``, if given, is ``bs.parse(data)`` already done (a cache),
    and ``data`` may then be None.
    Raises ``bs.UnknownCTE`` for BINARY of an encoding we cannot decode (NO [UNKNOWN-CTE])."""
    return FetchPlan(req, opts).render(seq, meta, data, recent, extra_flags, part)


def response_head(seq: int, uid: int, opts: FetchOptions) -> bytes:
    if opts.uidonly:
        return b"* %d UIDFETCH (" % uid
    return b"* %d FETCH (" % seq


# --- streaming big messages ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamedItem:
    """A FETCH item whose literal is sent from the store in chunks: ``prefix`` (e.g.
    ``BODY[] {123}\r\n`` or ``BINARY[] ~{123}\r\n``) then the blob's octets
    ``[offset, offset + length)``."""

    prefix: bytes
    offset: int
    length: int


def streamable(req: FetchRequest) -> bool:
    """Whether every item of ``req`` can be served from the message's header alone or as
    a byte range of the stored message (so a big message is never whole in memory):
    BODY[], BODY[TEXT], BINARY[], RFC822, RFC822.TEXT (with partials), and the header
    items (ENVELOPE, RFC822.HEADER, BODY[HEADER...])."""
    for a in req.atts:
        if not a.needs_body or a.name in ("RFC822", "RFC822.TEXT", "RFC822.HEADER",
                                           "ENVELOPE"):
            continue
        if a.name in ("BODY", "BINARY") and a.section and not a.path and (
                a.text in ("", "TEXT", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")):
            if a.name == "BINARY" and a.text:
                return False
            continue
        return False
    return True


def split_streamed(
    req: FetchRequest, size: int, header_len: int
) -> tuple[FetchRequest, list[StreamedItem]]:
    """``req`` without its byte-range items (rendered from the header by ``render``), and
    those items as ranges of a message of ``size`` octets whose header (with its blank
    line) is ``header_len`` octets."""
    rest = FetchRequest(changedsince=req.changedsince, vanished=req.vanished,
                        partial=req.partial)
    out: list[StreamedItem] = []
    seen: set[str] = set()
    for a in req.atts:
        if a.name in ("RFC822", "RFC822.TEXT"):
            if a.name in seen:
                continue
            seen.add(a.name)
            start = 0 if a.name == "RFC822" else header_len
            out.append(StreamedItem(b"%s {%d}\r\n" % (a.name.encode(), size - start),
                                    start, size - start))
        elif a.name in ("BODY", "BINARY") and a.section and a.text in ("", "TEXT"):
            start = 0 if a.text == "" else header_len
            total = size - start
            origin = b""
            if a.partial is not None:
                lo = min(a.partial[0], total)
                total = min(a.partial[1], total - lo)
                start += lo
                origin = b"<%d>" % a.partial[0]
            # BINARY[] of a whole message is its octets (RFC 3516 §4.2); a streamed one is
            # always sent as literal8, since it may hold NUL
            mark = b"~" if a.name == "BINARY" else b""
            out.append(StreamedItem(_section_name(a) + origin + b" " + mark
                                    + b"{%d}\r\n" % total, start, total))
        else:
            rest.atts.append(a)
    return rest, out


def render_items(
    meta: MessageMeta,
    req: FetchRequest,
    data: bytes | None,
    recent: bool,
    opts: FetchOptions,
    extra_flags: bool = False,
    part: bs.Part | None = None,
) -> list[bytes]:
    """The items of one FETCH response (``render`` wraps them)."""
    return FetchPlan(req, opts).items(meta, data, recent, extra_flags, part)


# A step renders one item of a response from (meta, recent, data, part, opts); ``part`` is
# None only when no step of the plan reads the message.
_Step = Callable[[MessageMeta, bool, "bytes | None", "bs.Part | None", FetchOptions], bytes]


def _memo(name: str, make: Callable[[bs.Part, bool], bytes]) -> _Step:
    """An item computed once per parsed message (a cached Part renders it once)."""
    prefix = name.encode() + b" "

    def step(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
             opts: FetchOptions) -> bytes:
        assert part is not None
        key = (name, opts.utf8)
        value = part.memo.get(key)
        if value is None:
            value = part.memo[key] = make(part, opts.utf8)
        return prefix + value

    return step


def _body_section(a: FetchAtt) -> _Step:
    key = _section_name(a)

    def step(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
             opts: FetchOptions) -> bytes:
        assert part is not None
        section = bs.section_bytes(part, a.path, a.text, a.headers)
        if section is None:
            return key + b" NIL"
        chunk, origin = _partial(section, a)
        return key + origin + b" " + literal(chunk)

    return step


def _binary_section(a: FetchAtt) -> _Step:
    key = _section_name(a)

    def step(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
             opts: FetchOptions) -> bytes:
        assert part is not None
        section = bs.binary_section(part, a.path)
        if section is None:
            return key + b" NIL"
        chunk, origin = _partial(section, a)
        prefix = b"~" if b"\x00" in chunk else b""  # literal8 (RFC 3516 §4.2)
        return key + origin + b" " + prefix + literal(chunk)

    return step


def _binary_size(a: FetchAtt) -> _Step:
    key = _section_name(a) + b" "

    def step(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
             opts: FetchOptions) -> bytes:
        assert part is not None
        section = bs.binary_section(part, a.path)
        return key + (b"NIL" if section is None else b"%d" % len(section))

    return step


def _flags_item(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
                opts: FetchOptions) -> bytes:
    return b"FLAGS " + _flags(meta, recent, opts)


def _modseq_item(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
                 opts: FetchOptions) -> bytes:
    return b"MODSEQ (%d)" % meta.modseq


def _rfc822_item(meta: MessageMeta, recent: bool, data: bytes | None, part: bs.Part | None,
                 opts: FetchOptions) -> bytes:
    if data is None:
        assert part is not None
        data = part.raw
    return b"RFC822 " + literal(data)


def _preview_item(p: bs.Part, utf8: bool) -> bytes:
    return quoted_or_literal(preview(p), utf8)


# the items that appear once in a response however often they are asked for, with what
# renders them; True: the step reads the parsed message
_ONCE: dict[str, tuple[_Step, bool]] = {
    "FLAGS": (_flags_item, False),
    "UID": (lambda m, r, d, p, o: b"UID %d" % m.uid, False),
    "INTERNALDATE": (lambda m, r, d, p, o: b"INTERNALDATE " + internaldate(m.internaldate),
                     False),
    "RFC822.SIZE": (lambda m, r, d, p, o: b"RFC822.SIZE %d" % m.size, False),
    "MODSEQ": (_modseq_item, False),
    "ENVELOPE": (_memo("ENVELOPE", bs.envelope), True),
    "BODYSTRUCTURE": (_memo("BODYSTRUCTURE",
                            lambda p, utf8: bs.bodystructure(p, True, utf8)), True),
    "BODY": (_memo("BODY", lambda p, utf8: bs.bodystructure(p, False, utf8)), True),
    "SAVEDATE": (lambda m, r, d, p, o: b"SAVEDATE " + internaldate(
        o.save_dates.get(m.uid, m.internaldate)), False),
    "EMAILID": (lambda m, r, d, p, o: b"EMAILID (%s)" % email_id(m).encode(), False),
    "THREADID": (lambda m, r, d, p, o: b"THREADID NIL", False),  # RFC 8474 §5.2: none
    "PREVIEW": (_memo("PREVIEW", _preview_item), True),
    "RFC822": (_rfc822_item, False),  # the bytes as given, or the parsed message's
    "RFC822.HEADER": (lambda m, r, d, p, o: b"RFC822.HEADER " + literal(
        p.header if p is not None else b""), True),
    "RFC822.TEXT": (lambda m, r, d, p, o: b"RFC822.TEXT " + literal(
        p.body if p is not None else b""), True),
}


class FetchPlan:
    """A FETCH request turned once into the steps that render each message's response:
    the checks of which items to send, in which order, and which only once, are made per
    command instead of per message (a FETCH of a range renders every message)."""

    __slots__ = ("_condstore", "_flags", "_opts", "_parses", "_steps")

    def __init__(self, req: FetchRequest, opts: FetchOptions) -> None:
        self._opts = opts
        steps: list[_Step] = []
        seen: set[str] = set()
        parses = False
        for a in req.atts:
            name = a.name
            once = _ONCE.get(name) if not (name == "BODY" and a.section) else None
            if once is not None:
                if name in seen or (name == "UID" and opts.uidonly):
                    continue  # UIDONLY: the response's number is the UID (RFC 9586 §3.3)
                seen.add(name)
                steps.append(once[0])
                parses = parses or once[1]
            elif name == "BODY":
                steps.append(_body_section(a))
                parses = True
            elif name == "BINARY":
                steps.append(_binary_section(a))
                parses = True
            elif name == "BINARY.SIZE":
                steps.append(_binary_size(a))
                parses = True
        self._steps = steps
        self._parses = parses
        self._flags = "FLAGS" not in seen  # FLAGS added when \Seen was just set
        self._condstore = "MODSEQ" not in seen  # RFC 7162 §3.1.4.1: MODSEQ always

    def items(self, meta: MessageMeta, data: bytes | None, recent: bool,
              extra_flags: bool = False, part: bs.Part | None = None) -> list[bytes]:
        opts = self._opts
        if part is None and self._parses:
            part = bs.parse(data or b"")
        items = [step(meta, recent, data, part, opts) for step in self._steps]
        if extra_flags and self._flags:
            items.append(_flags_item(meta, recent, data, part, opts))
        if opts.condstore and self._condstore:
            items.append(_modseq_item(meta, recent, data, part, opts))
        return items

    def render(self, seq: int, meta: MessageMeta, data: bytes | None, recent: bool,
               extra_flags: bool = False, part: bs.Part | None = None) -> bytes:
        """One ``* seq FETCH (...)`` response (see ``render``)."""
        items = self.items(meta, data, recent, extra_flags, part)
        return response_head(seq, meta.uid, self._opts) + b" ".join(items) + b")\r\n"


PREVIEW_CHARS = 200  # RFC 8970 §3.2: at most 256 characters
_TAGS = re.compile(r"<[^>]*>")


def preview(part: bs.Part) -> str:
    """RFC 8970: the start of the message's text, whitespace collapsed (HTML tags
    dropped when only HTML is there)."""
    text = text_of(part)
    if "<" in text and b"text/html" in part.raw[:65536].lower():
        text = _TAGS.sub(" ", text)
    words = " ".join(text.split())
    return words[:PREVIEW_CHARS]


def _flags(meta: MessageMeta, recent: bool, opts: FetchOptions) -> bytes:
    names = set(meta.flags)
    if recent and opts.rev1_recent:
        names.add("\\Recent")
    return fmt_flags(names)


__all__ = ["FetchAtt", "FetchOptions", "FetchPlan", "FetchRequest", "StreamedItem",
           "parse_fetch", "render", "render_items", "split_streamed", "streamable"]
