"""MIME structure of a message for FETCH: ENVELOPE, BODY/BODYSTRUCTURE and body sections
(RFC 9051 §6.4.5, §7.5.2).

We keep exact byte offsets (sections must be served byte-for-byte), so parts are split here
and the stdlib ``email`` package only parses header values (Content-Type parameters,
RFC 2231). Malformed MIME never raises: missing boundaries make a part a leaf, a missing
blank line makes the whole part a header.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from typing import Any

from pochta.proto.imap.response import nstring, plist

_MAX_DEPTH = 40
_HEADER_END = re.compile(rb"\n\r?\n")


@dataclass(slots=True)
class Part:
    header: bytes  # the header block including its terminating blank line
    body: bytes
    msg: Message  # header values only
    children: list[Part] = field(default_factory=list)  # multipart subparts
    message: Part | None = None  # the encapsulated message of message/rfc822
    _fields: list[tuple[str, bytes]] | None = None
    memo: dict[tuple[str, bool], bytes] = field(default_factory=dict)  # rendered ENVELOPE etc.
    # the fields by lower-case name (raw, in order), and the values asked for so far:
    # ENVELOPE and BODYSTRUCTURE ask for ~20 names, each a scan of every field before
    _by_name: dict[str, list[bytes]] | None = None
    _values: dict[str, list[str]] = field(default_factory=dict)
    _lower: list[tuple[str, bytes]] | None = None

    @property
    def raw(self) -> bytes:
        return self.header + self.body

    @property
    def content_type(self) -> str:
        ctype = _CONTENT_TYPES.get(self.msg)
        if ctype is None:
            ctype = self.msg.get_content_type()
            _memo_put(_CONTENT_TYPES, self.msg, ctype)
        return ctype

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/") and bool(self.children)

    def fields(self) -> list[tuple[str, bytes]]:
        """(name, raw field bytes with folding and CRLF) in order."""
        if self._fields is None:
            self._fields = header_fields(self.header)
        return self._fields

    def lower_fields(self) -> list[tuple[str, bytes]]:
        """``fields()`` with lower-case names (HEADER.FIELDS filters on them)."""
        if self._lower is None:
            self._lower = [(name.lower(), raw) for name, raw in self.fields()]
        return self._lower

    def header_values(self, name: str) -> list[str]:
        """The values of the fields called ``name`` (any case), unfolded, in order (the
        list is kept: callers do not change it)."""
        key = name.lower()
        out = self._values.get(key)
        if out is not None:
            return out
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for fname, raw in self.lower_fields():
                by_name.setdefault(fname, []).append(raw)
        out = self._values[key] = [_unfold(raw) for raw in by_name.get(key, ())]
        return out

    def header_value(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def _unfold(raw: bytes) -> str:
    """A raw field's value, unfolded (RFC 5322 §2.2.3) and stripped."""
    colon = raw.find(b":")
    value = raw[colon + 1 :].strip() if colon >= 0 else b""
    if b"\n" in value:
        value = _FOLD.sub(b"", value)
    return value.decode("utf-8", "replace")


class Headers:
    """A message's header fields, split once, without the email package (SORT, THREAD
    and SEARCH read a few fields of every message: email's parser costs ~100 us each)."""

    __slots__ = ("_fields", "_raw")

    def __init__(self, header: bytes) -> None:
        self._raw = header
        self._fields: dict[str, list[str]] = {}

    def header_values(self, name: str) -> list[str]:
        key = name.lower()
        values = self._fields.get(key)
        if values is None:
            # one C-level scan per field asked for; folded lines are joined
            pattern = _field_re(key)
            values = self._fields[key] = [
                _FOLD.sub(b"", m.group(1)).strip().decode("utf-8", "replace")
                for m in pattern.finditer(self._raw)]
        return values

    def header_value(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


@functools.lru_cache(maxsize=256)
def _field_re(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:(.*(?:\r?\n[ \t].*)*)")


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace")
            fields.append((name, line))
    return fields


def _split_header(data: bytes) -> tuple[bytes, bytes]:
    if data.startswith(b"\r\n"):
        return data[:2], data[2:]
    if data.startswith(b"\n"):
        return data[:1], data[1:]
    m = _HEADER_END.search(data)
    if m is None:
        return data, b""
    return data[: m.end()], data[m.end() :]


# A line email's header parser takes as a field or a continuation (feedparser.headerRE);
# any other line ends its header early, so such a header is parsed whole, as before.
_ODD_LINE = re.compile(rb"(?m)^(?![\t ]|[\041-\071\073-\176]*:|\r?$)")
_MIME_FIELDS = ("content-type", "content-disposition")  # all that ``Part.msg`` is asked


def _mime_header(header: bytes) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """What the email parser needs to see of a header: only its Content-Type and
    Content-Disposition fields (in order, folding kept), when every line is a well-formed
    field; parsing a whole header with email's parser costs ~10x more and is done for
    every message FETCH parses. Also the split fields, when they were split."""
    if _ODD_LINE.search(header):
        return header, None
    fields = header_fields(header)
    wanted = [raw for name, raw in fields if name.lower() in _MIME_FIELDS]
    return b"".join(wanted) + b"\r\n", fields


# What parts with the same MIME fields share, bounded (the texts come from senders):
# their parsed Message, by the fields' text (most parts of a mailbox repeat a few
# Content-Type lines, and email's parser costs ~30 us a time), and what email's getters
# give for it (~10 us a call), by the Message itself (hashed by identity). Nothing
# changes a Part's msg once parsed.
_MIME_MESSAGES: dict[tuple[bytes, str], Message] = {}
_MIME_SHARED_MAX = 1024  # bytes of fields worth keeping (a multipart's are unique anyway)
_CONTENT_TYPES: dict[Message, str] = {}
_PARAMS: dict[tuple[Message, str], bytes] = {}
_MEMO_MAX = 4096


def _memo_put(memo: dict[Any, Any], key: object, value: object) -> None:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value


def _mime_message(mime: bytes, default_type: str) -> Message:
    key = (mime, default_type)
    msg = _MIME_MESSAGES.get(key)
    if msg is None:
        msg = BytesHeaderParser(policy=compat32).parsebytes(mime)
        msg.set_default_type(default_type)
        if len(mime) <= _MIME_SHARED_MAX:
            _memo_put(_MIME_MESSAGES, key, msg)
    return msg


def parse(data: bytes, default_type: str = "text/plain", depth: int = 0) -> Part:
    header, body = _split_header(data)
    mime, fields = _mime_header(header)
    msg = _mime_message(mime, default_type)
    part = Part(header, body, msg, _fields=fields)
    if depth >= _MAX_DEPTH:
        return part
    ctype = part.content_type
    if ctype.startswith("multipart/"):
        boundary = msg.get_boundary()
        if boundary:
            # compat32 keeps folding inside a quoted value; unfold it (RFC 5322 §2.2.3)
            boundary = re.sub(r"\r?\n(?=[ \t])", "", boundary)
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            for chunk in _split_multipart(body, boundary.encode("ascii", "surrogateescape")):
                part.children.append(parse(chunk, child_default, depth + 1))
    elif ctype in ("message/rfc822", "message/global"):
        part.message = parse(body, "text/plain", depth + 1)
    return part


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    # RFC 2046 §5.1.1: a delimiter starts a line; the CRLF before it belongs to it.
    # bytes.find, not a regex with a leading alternation: this runs on every FETCH.
    marker = b"--" + boundary
    chunks: list[bytes] = []
    start: int | None = None
    pos = body.find(marker)
    while pos >= 0:
        if pos == 0 or body[pos - 1] == 0x0A:
            after = pos + len(marker)
            close = body.startswith(b"--", after)
            eol = after + 2 if close else after
            while eol < len(body) and body[eol] in b" \t":
                eol += 1
            if eol == len(body) or body.startswith(b"\n", eol) or body.startswith(b"\r\n", eol):
                if start is not None:
                    end = pos - 1 if pos > 0 else 0
                    if end > 0 and body[end - 1] == 0x0D:
                        end -= 1
                    chunks.append(body[start:max(start, end)])
                if close:
                    return chunks
                start = eol + (2 if body.startswith(b"\r\n", eol) else
                               1 if body.startswith(b"\n", eol) else 0)
        pos = body.find(marker, pos + 1)
    if start is not None:
        chunks.append(body[start:])  # no close delimiter: the last part runs to the end
    return chunks


# --- section numbering (RFC 9051 §6.4.5) ----------------------------------------------


def _numbered(part: Part, top: bool) -> list[Part]:
    if part.is_multipart:
        return part.children
    if top:
        # a non-multipart message has one part, its body, even when that body is itself
        # a message/rfc822: [1] is the encapsulated message, [1.1] its body (§6.4.5)
        return [part]
    if part.message is not None:
        inner = part.message
        return inner.children if inner.is_multipart else [inner]
    return []


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    cur, top = root, True
    for n in path:
        kids = _numbered(cur, top)
        if n < 1 or n > len(kids):
            return None
        cur, top = kids[n - 1], False
    return cur


def section_bytes(
    root: Part, path: tuple[int, ...], text: str, header_list: tuple[str, ...] = ()
) -> bytes | None:
    """The octets of BODY[path.text]; None when the part does not exist."""
    part = find_part(root, path)
    if part is None:
        return None
    if text == "":
        return root.raw if not path else part.body
    if text == "MIME":
        return part.header if path else None
    msg = part if not path else part.message
    if msg is None:
        return b""
    if text == "TEXT":
        return msg.body
    if text == "HEADER":
        return msg.header
    wanted = _lower_set(header_list)
    keep = text == "HEADER.FIELDS"
    out = b"".join(raw for name, raw in msg.lower_fields() if (name in wanted) == keep)
    return out + b"\r\n"


@functools.lru_cache(maxsize=256)  # a FETCH asks the same list of every message
def _lower_set(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(h.lower() for h in names)


class UnknownCTE(Exception):
    pass


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_LINES = re.compile(rb"([^\n]*?)(\r?\n|\Z)")


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 §6.7): trailing blanks on a line are dropped, `=` at the
    end of a line (even before blanks) is a soft break; a stray `=` stays as it is."""
    out = bytearray()
    for m in _LINES.finditer(data):
        line, eol = m.group(1).rstrip(b" \t"), m.group(2)
        if not line and not eol:
            break
        if line.endswith(b"="):
            out += _QP_ESCAPE.sub(lambda x: bytes([int(x.group(1), 16)]), line[:-1])
            continue
        out += _QP_ESCAPE.sub(lambda x: bytes([int(x.group(1), 16)]), line)
        if eol:
            out += b"\r\n"
    return bytes(out)


def decode_body(part: Part) -> bytes:
    """The body with its Content-Transfer-Encoding removed (BINARY, RFC 3516)."""
    cte = (part.header_value("Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte in ("7bit", "8bit", "binary", ""):
        return part.body
    if cte == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", part.body) + b"===")
        except (binascii.Error, ValueError):
            return b""
    if cte == "quoted-printable":
        return decode_qp(part.body)
    raise UnknownCTE(cte)


def binary_section(root: Part, path: tuple[int, ...]) -> bytes | None:
    if not path:
        return root.raw
    part = find_part(root, path)
    if part is None:
        return None
    if part.is_multipart or part.message is not None:
        return part.body
    return decode_body(part)


# --- ENVELOPE (RFC 9051 §7.5.2) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


def parse_address_list(value: str) -> list[Address]:
    """RFC 5322 address-list with groups, leniently. A comment only counts as the display
    name of an address that has none (``user@domain (Real Name)``), as Dovecot does."""
    out: list[Address] = []
    tokens: list[tuple[str, str]] = []
    in_group = False
    i, n = 0, len(value)

    def finish() -> None:
        if tokens:
            addr = _address(tokens)
            if addr is not None:
                out.append(addr)
            tokens.clear()

    while i < n:
        c = value[i]
        if c == '"':
            j, buf = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(value[j])
                j += 1
            tokens.append(("q", "".join(buf)))
            i = j + 1
        elif c == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                if value[j] == "\\":
                    j += 1
                elif value[j] == "(":
                    depth += 1
                elif value[j] == ")":
                    depth -= 1
                j += 1
            tokens.append(("c", value[i + 1 : j - 1].strip()))
            i = j
        elif c == "<":
            j = value.find(">", i)
            j = n if j < 0 else j
            tokens.append(("a", value[i + 1 : j]))
            i = j + 1
        elif c == ",":
            finish()
            i += 1
        elif c == ":" and not in_group and not any(k == "a" for k, _ in tokens):
            name = " ".join(t for k, t in tokens if k != "c")
            tokens.clear()
            out.append(Address(None, None, name, None))
            in_group = True
            i += 1
        elif c == ";" and in_group:
            finish()
            out.append(Address(None, None, None, None))
            in_group = False
            i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and value[j] not in '"(<,;' and not value[j].isspace() and not (
                value[j] == ":" and not in_group
            ):
                j += 1
            if j == i:
                j = i + 1
            tokens.append(("w", value[i:j]))
            i = j
    finish()
    if in_group:
        out.append(Address(None, None, None, None))
    return out


_COMMENT = re.compile(r"\([^()]*\)")
_BLANKS = re.compile(r"\s+")


def _address(tokens: list[tuple[str, str]]) -> Address | None:
    comments = [t for k, t in tokens if k == "c" and t]
    tokens = [(k, t) for k, t in tokens if k != "c"]
    angle = next((t for k, t in tokens if k == "a"), None)
    if angle is not None:
        phrase = " ".join(t for k, t in tokens[: [k for k, _ in tokens].index("a")])
        # comments and blanks may appear between the tokens of an addr-spec (RFC 5322 §3.4.1)
        if "(" in angle:
            angle = _COMMENT.sub("", angle)
        spec = _BLANKS.sub("", angle) if not angle.isprintable() or " " in angle else angle
        adl = None
        if spec.startswith("@") and ":" in spec:
            adl, spec = spec.split(":", 1)
        name = phrase or None
    else:
        spec = "".join(t if k != "q" else f'"{t}"' for k, t in tokens)
        name, adl = (comments[-1] if comments else None), None
        if not spec:
            return None  # a lone comment is not an address
    if not spec and not name:
        return None
    if "@" in spec:
        local, host = spec.rsplit("@", 1)
    else:
        local, host = spec, "MISSING_DOMAIN"
    return Address(name, adl, local, host)


def _addresses(part: Part, name: str, utf8: bool) -> bytes:
    values = part.header_values(name)
    addrs = [a for v in values for a in parse_address_list(v)]
    if not addrs:
        return b"NIL"
    return plist(
        plist(nstring(x, utf8) for x in (a.name, a.adl, a.mailbox, a.host)) for a in addrs
    )


def envelope(part: Part, utf8: bool = False) -> bytes:
    def one(name: str) -> bytes:
        return nstring(part.header_value(name), utf8)

    from_ = _addresses(part, "From", utf8)
    sender = _addresses(part, "Sender", utf8)
    reply_to = _addresses(part, "Reply-To", utf8)
    return plist([
        one("Date"),
        one("Subject"),
        from_,
        from_ if sender == b"NIL" else sender,  # §7.5.2: absent Sender/Reply-To = From
        from_ if reply_to == b"NIL" else reply_to,
        _addresses(part, "To", utf8),
        _addresses(part, "Cc", utf8),
        _addresses(part, "Bcc", utf8),
        one("In-Reply-To"),
        one("Message-ID"),
    ])


# --- BODY / BODYSTRUCTURE -------------------------------------------------------------


def _params(part: Part, header: str = "content-type") -> bytes:
    key = (part.msg, header)
    params = _PARAMS.get(key)
    if params is None:
        params = _render_params(part, header)
        _memo_put(_PARAMS, key, params)
    return params


def _render_params(part: Part, header: str) -> bytes:
    raw = part.msg.get_params(header=header, failobj=None)
    if not raw:
        if header == "content-type" and part.content_type.startswith("text/"):
            return b'("CHARSET" "US-ASCII")'  # RFC 2045 §5.2 default
        return b"NIL"
    items: list[bytes] = []
    # Any: typeshed says (str, str), but an RFC 2231 value is a (charset, language, text)
    # tuple, and compiled code (make native) checks the declared types
    params: list[Any] = raw[1:]
    for key, value in params:
        if isinstance(value, tuple):
            value = collapse_rfc2231_value(value)
        if not key:
            continue
        items.append(nstring(key.upper()))
        items.append(nstring(str(value).encode("utf-8", "surrogateescape")))
    return plist(items) if items else b"NIL"


def _lines(data: bytes) -> int:
    # body-fld-lines counts line ends, as Dovecot and Cyrus do: a body part's last CRLF
    # belongs to the boundary that follows (RFC 2046 §5.1.1), so it is not counted
    return data.count(b"\n")


def _disposition(part: Part) -> bytes:
    value = part.msg.get("Content-Disposition")
    if not value:
        return b"NIL"
    kind = str(value).split(";", 1)[0].strip()
    if not kind:
        return b"NIL"
    return plist([nstring(kind.upper()), _params(part, "content-disposition")])


def _language(part: Part) -> bytes:
    value = part.header_value("Content-Language")
    if not value:
        return b"NIL"
    langs = [x.strip() for x in value.split(",") if x.strip()]
    if len(langs) == 1:
        return nstring(langs[0])
    return plist(nstring(x) for x in langs) if langs else b"NIL"


def bodystructure(part: Part, extended: bool = True, utf8: bool = False) -> bytes:
    if part.is_multipart:
        kids = b"".join(bodystructure(c, extended, utf8) for c in part.children)
        sub = part.content_type.split("/", 1)[1]
        items = [kids, nstring(sub.upper())]
        if extended:
            items += [_params(part), _disposition(part), _language(part),
                      nstring(part.header_value("Content-Location"))]
        return b"(" + b" ".join(items) + b")"
    ctype = part.content_type
    if ctype.startswith("multipart/"):
        ctype = "text/plain"  # a multipart without a usable boundary is shown as text
    maintype, sub = ctype.split("/", 1)
    cte = part.header_value("Content-Transfer-Encoding") or "7BIT"
    fields = [
        nstring(maintype.upper()),
        nstring(sub.upper()),
        _params(part),
        nstring(part.header_value("Content-ID")),
        nstring(part.header_value("Content-Description"), utf8),
        nstring(cte.upper()),
        b"%d" % len(part.body),
    ]
    if part.message is not None:
        fields += [
            envelope(part.message, utf8),
            bodystructure(part.message, extended, utf8),
            b"%d" % _lines(part.body),
        ]
    elif maintype == "text":
        fields.append(b"%d" % _lines(part.body))
    if extended:
        fields += [nstring(part.header_value("Content-MD5")), _disposition(part),
                   _language(part), nstring(part.header_value("Content-Location"))]
    return b"(" + b" ".join(fields) + b")"


# --- APPEND of binary content (RFC 3516 §4.3) -----------------------------------------

_CTE_LINE = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(\r?\n[ \t][^\r\n]*)*\r?\n")


def _leaves(part: Part) -> list[Part]:
    if part.is_multipart:
        return [leaf for c in part.children for leaf in _leaves(c)]
    if part.message is not None:
        return _leaves(part.message)
    return [part]


def encode_binary_parts(data: bytes) -> bytes:
    """A message APPENDed with NUL octets (a literal8) cannot be sent in a plain literal,
    so BODY[] could not return it: every part whose body holds NUL gets base64 with its
    Content-Transfer-Encoding changed (as Dovecot does); BINARY[] still returns the
    original octets. Messages without NUL come back unchanged."""
    if b"\x00" not in data:
        return data
    for leaf in _leaves(parse(data)):
        if b"\x00" not in leaf.body:
            continue
        encoded = base64.encodebytes(leaf.body).replace(b"\n", b"\r\n")
        header = _CTE_LINE.sub(b"", leaf.header)
        end = len(header) - (2 if header.endswith(b"\r\n") else 1)
        header = header[:end] + b"Content-Transfer-Encoding: base64\r\n" + header[end:]
        old = leaf.header + leaf.body
        if old in data:
            data = data.replace(old, header + encoded, 1)
    return data
