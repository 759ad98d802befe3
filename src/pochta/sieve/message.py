"""The message as Sieve tests see it: header fields (unfolded, RFC 2047 decoded), addresses,
the body by transform (RFC 5173), and header edits (RFC 5293). Parsed lazily and once,
then shared by every recipient's script run."""

from __future__ import annotations

import email
import email.policy
import re
import urllib.parse
from dataclasses import dataclass
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import getaddresses

from pochta.mail.headers import split_body

_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a line end before white space: folding
_LINE_END = re.compile(r"\n(?![ \t])")  # a field's end (its CR taken off after)
_CHARSET = re.compile(r'charset\s*=\s*"?([^";\s]+)')


def _field_lines(text: str) -> list[str]:
    """The header's fields, each with its continuation lines: the text split at the line
    ends not followed by white space (\\r?\\n(?![ \\t]); a pattern starting with \\r?
    is tried at every character, one starting with \\n is searched for)."""
    pieces = _LINE_END.split(text)
    return [p[:-1] if p[-1:] == "\r" else p for p in pieces[:-1]] + pieces[-1:]


def _decode_value(raw: str) -> str:
    value = (_FOLD.sub("", raw) if "\n" in raw else raw).strip()
    if "=?" in value:
        try:
            return str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            return value
    return value


# RFC 5322 §3.4 mailboxes simple enough that email.utils.getaddresses is not needed:
# "a@b", "<a@b>", "Display Name <a@b>" with dot-atom local part and domain, a display
# name without specials (no quotes, comments, groups, commas); getaddresses gives the
# same address for them (tests/sieve/test_interpreter.py compares both)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_SIMPLE_ADDRESS = re.compile(
    rf"[ \t]*(?:({_DOT_ATOM}@{_DOT_ATOM})|"
    rf"(?:[A-Za-z0-9][A-Za-z0-9 \t_'-]*)?<({_DOT_ATOM}@{_DOT_ATOM})>)[ \t]*\Z")


def header_addresses(value: str) -> list[str]:
    """The addresses of one field value (RFC 5228 §5.1: groups give their members)."""
    m = _SIMPLE_ADDRESS.match(value)
    if m is not None:
        return [m.group(1) or m.group(2)]
    return [addr for _, addr in getaddresses([value])]


class _Header:
    """What is derived from the header fields: built lazily, shared by the forks of a
    message (every recipient's run) until one of them edits the header."""

    __slots__ = ("addresses", "decoded", "fields", "memo", "raw")

    def __init__(self, fields: list[tuple[str, str, str]] | None) -> None:
        self.fields = fields  # (lower name, name, raw value), None until parsed
        self.raw: dict[str, list[str]] | None = None  # lower name -> raw values
        self.decoded: dict[str, list[str]] = {}  # lower name -> decoded values
        self.addresses: dict[str, list[str]] = {}
        # the evaluator's derived values (folded, address parts), by its own keys
        self.memo: dict[object, list[str]] = {}


class _Body:
    """The body as tests see it, shared by every fork (header edits leave it alone, as
    the parsed message is the one received)."""

    __slots__ = ("memo", "parsed", "parts", "texts")

    def __init__(self) -> None:
        self.parsed: Message | None = None
        self.parts: list[MimePart] | None = None
        self.texts: dict[tuple[bool, tuple[str, ...]], list[str]] = {}
        self.memo: dict[object, list[str]] = {}  # the evaluator's (folded texts)


class SieveMessage:
    """One message; ``data`` is the bytes that will be stored."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._head, self._body = split_body(data)
        self._size = len(data)
        self._h = _Header(None)
        self._b = _Body()
        # the evaluator's values derived from the header (until an edit) and the body
        self.memo = self._h.memo
        self.body_memo = self._b.memo
        self.edited = False

    def fork(self) -> SieveMessage:
        """A view for one run: shares what was parsed (and what is parsed later, until
        it edits), edits stay its own."""
        other = SieveMessage.__new__(SieveMessage)
        other.data, other._head, other._body, other._size = (
            self.data, self._head, self._body, self._size)
        other._h, other.memo = self._h, self.memo
        other._b, other.body_memo = self._b, self.body_memo
        other.edited = False
        return other

    def replaced(self, data: bytes) -> SieveMessage:
        """A new message (replace, enclose: RFC 5703 §5, §6) that counts as edited."""
        new = SieveMessage(data)
        new.edited = True
        return new

    def mime_parts(self) -> list[MimePart]:
        """The MIME tree, depth first, the message itself first (RFC 5703 §3)."""
        if self._b.parts is None:
            self._b.parts = mime_parts(self._message())
        return self._b.parts

    def parsed(self) -> Message:
        return self._message()

    @property
    def size(self) -> int:
        """Octets of the message, header edits included (RFC 5293 §3: later tests see
        the edited message)."""
        return len(self.render()) if self.edited else self._size

    # --- headers -------------------------------------------------------------------------

    @property
    def fields(self) -> list[tuple[str, str, str]]:
        fields = self._h.fields
        if fields is None:
            fields = []
            for line in _field_lines(self._head.decode("utf-8", "replace")):
                if not line:
                    continue
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.rstrip():
                    continue
                fields.append((name.lower(), name, value))
            self._h.fields = fields
        return fields

    def headers(self, name: str) -> list[str]:
        """Decoded values of every field called ``name`` (case-insensitive), in order;
        each name is decoded on first use only."""
        h = self._h
        values = h.decoded.get(name)
        if values is not None:
            return values
        lower = name.lower()
        values = h.decoded.get(lower)
        if values is None:
            raw = h.raw
            if raw is None:
                raw = {}
                for field_name, _, value in self.fields:
                    raw.setdefault(field_name, []).append(value)
                h.raw = raw
            values = [_decode_value(v) for v in raw.get(lower, ())]
            h.decoded[lower] = values
        h.decoded[name] = values
        return values

    def addresses(self, name: str) -> list[str]:
        """Addresses of the field's values (RFC 5228 §5.1: groups give their members)."""
        key = name.lower()
        cached = self._h.addresses.get(key)
        if cached is None:
            cached = [addr for value in self.headers(key) for addr in header_addresses(value)]
            self._h.addresses[key] = cached
        return cached


    # --- editheader (RFC 5293) -----------------------------------------------------------

    def add_header(self, name: str, value: str, last: bool) -> None:
        if not value.isascii():
            value = Header(value, "utf-8").encode()
        entry = (name.lower(), name, " " + value)
        fields = list(self.fields)
        if last:
            fields.append(entry)
        else:
            fields.insert(0, entry)
        self._set_fields(fields)

    def delete_headers(self, name: str, keep: list[bool]) -> None:
        """Drop the ``name`` fields whose entry in ``keep`` (by occurrence) is False."""
        fields: list[tuple[str, str, str]] = []
        n = 0
        lower = name.lower()
        for f in self.fields:
            if f[0] == lower:
                if not keep[n]:
                    n += 1
                    continue
                n += 1
            fields.append(f)
        self._set_fields(fields)

    def _set_fields(self, fields: list[tuple[str, str, str]]) -> None:
        self._h = _Header(fields)  # the other forks keep the header they saw
        self.memo = self._h.memo
        self.edited = True

    def render(self) -> bytes:
        """The message with its edited header (``data`` itself when unedited)."""
        if not self.edited:
            return self.data
        head = "".join(f"{name}:{raw}\r\n" for _, name, raw in self.fields)
        return head.encode("utf-8") + b"\r\n" + self._body

    # --- body (RFC 5173) -----------------------------------------------------------------

    @property
    def raw_body(self) -> bytes:
        return self._body

    def _simple_text(self) -> str | None:
        """The body of a plain, unencoded text/plain message without the MIME parser
        (most mail a filter sees), else None."""
        ctypes = self.headers("content-type")
        ctype = ctypes[0].lower() if ctypes else "text/plain"
        if not ctype.startswith("text/plain") or len(ctypes) > 1:
            return None
        cte = self.headers("content-transfer-encoding")
        if cte and cte[0].strip().lower() not in ("7bit", "8bit", "binary"):
            return None
        m = _CHARSET.search(ctype)
        try:
            return self._body.decode(m.group(1) if m else "utf-8", "replace")
        except LookupError:
            return self._body.decode("utf-8", "replace")

    def _message(self) -> Message:
        if self._b.parsed is None:
            self._b.parsed = email.message_from_bytes(self.data, policy=email.policy.compat32)
        return self._b.parsed

    def body_parts(self, content_types: tuple[str, ...], as_text: bool = False) -> list[str]:
        """Decoded text of the parts whose type matches ("" matches every type, "type"
        matches "type/*", "type/sub" exactly). ``as_text`` is body :text (RFC 5173 §5.3:
        the text parts with HTML tags dropped); :content gives parts as they are (§5.2)."""
        key = (as_text, content_types)
        cached = self._b.texts.get(key)
        if cached is not None:
            return cached
        if not self._body.strip():
            return []  # no body: nothing to match, not even "" (RFC 5173 §5)
        simple = self._simple_text()
        if simple is not None and any(t in ("", "text", "text/plain") for t in content_types):
            self._b.texts[key] = [simple]
            return [simple]
        out: list[str] = []
        msg = self._message()
        for part in msg.walk():
            ctype = part.get_content_type().lower()
            cte = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
            if cte not in _KNOWN_CTE and not part.is_multipart():
                ctype = "application/octet-stream"  # RFC 2045 §6.4: unknown encoding
            if as_text and ctype == "application/xhtml+xml":
                ctype = "text/html"  # RFC 5173 §5.3: text extracted from HTML-like parts
            main = ctype.split("/")[0]
            if not any(t == "" or t.lower() == ctype or ("/" not in t and t.lower() == main)
                       for t in content_types):
                continue
            if part.is_multipart():
                if not as_text:
                    out.extend(_container_text(part))
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "us-ascii"
            try:
                text = payload.decode(charset, "replace")
            except LookupError:
                text = payload.decode("utf-8", "replace")
            if ctype == "text/html" and as_text:
                text = re.sub(r"<[^>]*>", " ", text)
            out.append(text)
        self._b.texts[key] = out
        return out


_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})


def _container_text(part: Message) -> list[str]:
    """RFC 5173 §5.2: a matching multipart is searched in its prologue and epilogue (each
    a string of its own), a matching message/rfc822 in the nested message's header (one
    string); the parts inside only when their own type matches."""
    if part.get_content_maintype() == "message":
        nested = part.get_payload()
        if isinstance(nested, list) and nested and isinstance(nested[0], Message):
            return ["".join(f"{k}: {v}\r\n" for k, v in nested[0].items())
                    .replace("\r\n", "\n").replace("\n", "\r\n")]
        return []
    return [t for t in (part.preamble, part.epilogue) if t]


# --- MIME parts (RFC 5703) ---------------------------------------------------------------

_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(slots=True)
class MimePart:
    """One part of the MIME tree, in depth-first order: the message itself is part 0,
    and the parts from ``index + 1`` up to ``end`` are its descendants."""

    index: int
    end: int
    fields: list[tuple[str, str]]  # (lower-case name, decoded value)
    content_type: str  # "type/subtype", lower case
    text: str | None  # decoded content of a text/* leaf, else None

    def headers(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for n, v in self.fields if n == lower]


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b`` -> ("type/subtype", {"a": "b"}) (RFC 2045 §5.1)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    # RFC 2231 §3-4: name*0, name*1* ... continuations, name* charset'lang'%XX values
    sections: dict[str, dict[int, tuple[bool, str]]] = {}
    for m in _PARAM.finditer(";" + rest):
        name = m.group(1).lower()
        v = m.group(2).strip()
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        split = _RFC2231_NAME.match(name)
        if split is None:
            params.setdefault(name, v)
            continue
        base, number, star = split.groups()
        encoded = bool(star) or number is None  # a bare "name*" is always encoded
        sections.setdefault(base, {}).setdefault(int(number or 0), (encoded, v))
    for base, parts in sections.items():
        if base not in params:
            params[base] = _join_rfc2231([parts[i] for i in sorted(parts)])
    return main.strip(), params


_RFC2231_NAME = re.compile(r"([^*]+)\*(\d{1,3})?(\*)?\Z")


def _join_rfc2231(parts: list[tuple[bool, str]]) -> str:
    charset = "us-ascii"
    raw = bytearray()
    for i, (encoded, v) in enumerate(parts):
        if not encoded:
            raw += v.encode("utf-8", "replace")
            continue
        if i == 0 and v.count("'") >= 2:
            charset, _lang, v = v.split("'", 2)
        raw += urllib.parse.unquote_to_bytes(v)
    try:
        return raw.decode(charset or "us-ascii", "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _part_text(part: Message) -> str | None:
    if part.is_multipart() or part.get_content_maintype() != "text":
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def mime_parts(root: Message, limit: int = 1000) -> list[MimePart]:
    """The MIME tree of ``root`` flattened (at most ``limit`` parts)."""
    out: list[MimePart] = []

    def walk(part: Message) -> None:
        if len(out) >= limit:
            return
        index = len(out)
        fields = [(str(k).lower(), _decode_value(str(v))) for k, v in part.items()]
        placeholder = MimePart(index, index + 1, fields, part.get_content_type().lower(),
                               _part_text(part))
        out.append(placeholder)
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                for child in children:
                    if isinstance(child, Message):
                        walk(child)
        placeholder.end = len(out)

    walk(root)
    return out
