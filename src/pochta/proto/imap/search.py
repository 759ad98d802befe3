"""SEARCH keys (RFC 9051 §6.4.4), ESEARCH return options (RFC 4731/9051) and evaluation.

Parsing gives a tree of ``Key``; ``matches`` evaluates it against one message whose bytes
the caller loads beforehand when ``needs_body`` says so.
"""

from __future__ import annotations

import bisect
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from pochta.mail.model import MessageMeta
from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.parser import Date, ParseError, Reader
from pochta.proto.imap.seqset import STAR, SeqSet, parse_seqset

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
_ADDRESS_HEADERS = {"BCC", "CC", "FROM", "TO", "SENDER", "REPLY-TO"}
# The header fields whose SEARCH texts the store keeps per message (``Candidate.
# search_fields``), so SEARCH FROM/TO/CC/BCC/SUBJECT need not read every message.
SEARCH_FIELDS = ("FROM", "TO", "CC", "BCC", "SUBJECT")
# Kept texts are stored as, per field in SEARCH_FIELDS order, "\x1f" before each value,
# fields joined by "\x1e" ("" is no such field, "\x1f" one empty value). A text holding
# either separator is not kept (the message is read each time, as before).
_FIELD_SEP, _VALUE_SEP = "\x1e", "\x1f"
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE",
              "SAVEDON", "SAVEDSINCE"}
RETURN_OPTIONS = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"}
# A search program is evaluated against every message: a program of thousands of keys
# (SEARCH ALL ALL ..., SEARCH 1 2 3 ...) costs thousands of times more per message and
# serves no client. Both limits answer BAD with a clear text.
MAX_SEARCH_KEYS = 1000
MAX_SEARCH_DEPTH = 50
MAX_KEPT_TERMS = 16  # FROM/TO/... keys a store query decides at once (``kept_terms``)


@dataclass(frozen=True, slots=True)
class Key:
    op: str  # ALL AND OR NOT FLAG SEQ UID HEADER BODY TEXT DATE SENTDATE SIZE RECENT NEW ...
    args: tuple[object, ...] = ()


@dataclass(slots=True)
class SearchProgram:
    key: Key
    charset: str = "UTF-8"
    returns: list[str] | None = None  # None: a plain SEARCH (no RETURN); [] = RETURN ()
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL lo:hi), RFC 9394
    uses_saved: bool = False

    @property
    def needs_body(self) -> bool:
        return _needs_body(self.key)

    @property
    def needs_fields_only(self) -> bool:
        """The message is only needed for SEARCH_FIELDS texts, which the store may keep."""
        return self.needs_body and _fields_only(self.key)

    @property
    def required_text(self) -> str | None:
        """A case-folded text that one of SEARCH_FIELDS' kept texts of every match holds
        (the longest FROM/TO/CC/BCC/SUBJECT needle the whole program requires), for the
        store to leave out the messages that cannot match; None: no such text."""
        needles = _required(self.key)
        return max(needles, key=len) if needles else None

    def field_matcher(self) -> Callable[[str], bool] | None:
        """For a program that is one FROM/TO/CC/BCC/SUBJECT key with a needle, the same
        answer as ``matches`` from the kept texts alone (the needle holds no separator, so
        it is in one of the field's values exactly when it is in their joined text)."""
        k = self.key
        needles = _required(k)
        if k.op != "HEADER" or not needles:
            return None
        index, needle = SEARCH_FIELDS.index(str(k.args[0]).upper()), needles[0]
        return lambda kept: needle in kept.split(_FIELD_SEP, index + 1)[index]

    def kept_terms(self) -> list[tuple[int, str]] | None:
        """For a program that is FROM/TO/CC/BCC/SUBJECT keys with needles, ANDed: each
        key as (index in SEARCH_FIELDS, case-folded needle), for the store to decide on
        the kept texts alone (the needle holds no separator, so it is in one of a field's
        values exactly when it is in that field's part of the kept string); else None."""
        keys = list(self.key.args) if self.key.op == "AND" else [self.key]
        terms: list[tuple[int, str]] = []
        for k in keys:
            if not isinstance(k, Key) or k.op != "HEADER":
                return None
            needles = _required(k)
            if not needles:
                return None
            terms.append((SEARCH_FIELDS.index(str(k.args[0]).upper()), needles[0]))
        terms = list(dict.fromkeys(terms))  # FROM a FROM a: one test
        # each term is a condition of the store's query: a program of hundreds of them
        # (up to MAX_SEARCH_KEYS) is evaluated per message on the kept texts instead
        return terms if len(terms) <= MAX_KEPT_TERMS else None

    @property
    def uses_modseq(self) -> bool:
        return _uses(self.key, "MODSEQ")

    @property
    def uses_seqs(self) -> bool:
        """Message sequence numbers as a key (refused after ENABLE UIDONLY)."""
        return _uses(self.key, "SEQ")

    @property
    def uses_savedate(self) -> bool:
        return _uses(self.key, "SAVEDDATE")


def email_id(meta: MessageMeta) -> str:
    """OBJECTID's EMAILID (RFC 8474 §5.1): copies share their stored bytes, and so their
    id."""
    return f"E{meta.blob_id}"


def _needs_body(k: Key) -> bool:
    if k.op in ("HEADER", "BODY", "TEXT", "SENTDATE"):
        return True
    return any(isinstance(a, Key) and _needs_body(a) for a in k.args)


def _fields_only(k: Key) -> bool:
    if k.op in ("BODY", "TEXT", "SENTDATE"):
        return False
    if k.op == "HEADER":
        return str(k.args[0]).upper() in SEARCH_FIELDS
    return all(_fields_only(a) for a in k.args if isinstance(a, Key))


def _required(k: Key) -> list[str]:
    if k.op == "HEADER" and str(k.args[0]).upper() in SEARCH_FIELDS:
        folded = str(k.args[1]).casefold()
        if folded and _FIELD_SEP not in folded and _VALUE_SEP not in folded:
            return [folded]
    if k.op == "AND":
        return [n for a in k.args if isinstance(a, Key) for n in _required(a)]
    return []


def _uses(k: Key, op: str) -> bool:
    return k.op == op or any(isinstance(a, Key) and _uses(a, op) for a in k.args)


def parse_partial(r: Reader) -> tuple[int, int]:
    """partial-range (RFC 9394 §3): ``lo:hi`` or ``-lo:-hi``, both non-zero."""
    neg = r.accept("-")
    lo = r.number(nonzero=True)
    r.expect(":")
    if neg:
        r.expect("-")
    hi = r.number(nonzero=True)
    lo, hi = min(lo, hi), max(lo, hi)
    return (-lo, -hi) if neg else (lo, hi)


def apply_partial(numbers: list[int], rng: tuple[int, int]) -> list[int]:
    """The results at 1-based positions lo..hi (negative: -1 is the last)."""
    lo, hi = rng
    if lo > 0:
        return numbers[lo - 1 : hi]
    n = len(numbers)
    return numbers[max(n + hi, 0) : max(n + lo + 1, 0)]


def parse_search(r: Reader, esearch_allowed: bool = True) -> SearchProgram:
    """After "SEARCH SP"."""
    returns: list[str] | None = None
    partial: tuple[int, int] | None = None
    charset = "UTF-8"
    if r.accept("RETURN "):
        if not esearch_allowed:
            raise ParseError("RETURN not allowed here")
        r.expect("(")
        returns = []
        while not r.accept(")"):
            if returns:
                r.sp()
            opt = r.atom().upper()
            if opt not in RETURN_OPTIONS:
                raise ParseError(f"unknown RETURN option {opt}")
            if opt == "PARTIAL":
                r.sp()
                partial = parse_partial(r)
            returns.append(opt)
        r.sp()
    if r.accept("CHARSET "):
        charset = r.astring().upper()
        r.sp()
    budget = _Budget(MAX_SEARCH_KEYS)
    keys = [_key(r, budget)]
    while r.maybe_sp():
        keys.append(_key(r, budget))
    r.end()
    key = keys[0] if len(keys) == 1 else Key("AND", tuple(keys))
    return SearchProgram(key, charset, returns, partial, _uses(key, "SAVED"))


@dataclass(slots=True)
class _Budget:
    left: int


def _key(r: Reader, budget: _Budget, depth: int = 0) -> Key:
    if depth > MAX_SEARCH_DEPTH:
        raise ParseError(f"search program nested too deeply (at most {MAX_SEARCH_DEPTH})")
    budget.left -= 1
    if budget.left < 0:
        raise ParseError(f"search program too long (at most {MAX_SEARCH_KEYS} keys)")
    if r.accept("("):
        keys = [_key(r, budget, depth + 1)]
        while not r.accept(")"):
            r.sp()
            keys.append(_key(r, budget, depth + 1))
        return keys[0] if len(keys) == 1 else Key("AND", tuple(keys))
    c = r.peek()
    if c.isdigit() or c in "*$":
        s = parse_seqset(r)
        return Key("SAVED") if s.saved else Key("SEQ", (s,))
    word = r.atom().upper()
    if word == "ALL":
        return Key("ALL")
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return Key("FLAG", (flag, present))
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return Key("FLAG", (r.flag(), word == "KEYWORD"))
    if word in ("NEW", "OLD", "RECENT"):
        return Key(word)
    if word == "NOT":
        r.sp()
        return Key("NOT", (_key(r, budget, depth + 1),))
    if word == "OR":
        r.sp()
        a = _key(r, budget, depth + 1)
        r.sp()
        return Key("OR", (a, _key(r, budget, depth + 1)))
    if word in _HEADER_KEYS:
        r.sp()
        return Key("HEADER", (word, r.astring()))
    if word == "HEADER":
        r.sp()
        name = r.astring()
        r.sp()
        return Key("HEADER", (name, r.astring()))
    if word in ("BODY", "TEXT"):
        r.sp()
        return Key(word, (r.astring(),))
    if word in _DATE_KEYS:
        r.sp()
        if word.startswith("SAVED"):  # RFC 8514 §4.4
            return Key("SAVEDDATE", (word.removeprefix("SAVED"), r.date()))
        kind = "SENTDATE" if word.startswith("SENT") else "DATE"
        return Key(kind, (word.removeprefix("SENT"), r.date()))
    if word == "SAVEDATESUPPORTED":
        return Key("ALL")  # every mailbox records save dates
    if word in ("EMAILID", "THREADID"):  # RFC 8474 §6
        r.sp()
        value = r.astring()
        return Key(word, (value,))
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return Key("SIZE", (word, r.number()))
    if word in ("OLDER", "YOUNGER"):  # WITHIN (RFC 5032 §2): an age in seconds
        r.sp()
        return Key("AGE", (word, r.number(nonzero=True)))
    if word == "UID":
        r.sp()
        s = parse_seqset(r)
        return Key("SAVED_UID") if s.saved else Key("UID", (s,))
    if word == "MODSEQ":
        r.sp()
        if r.peek() == '"':  # entry-name and entry-type-req (RFC 7162 §3.1.5), ignored
            r.string()
            r.sp()
            r.atom()
            r.sp()
        return Key("MODSEQ", (r.number(),))
    raise ParseError(f"unknown search key {word}")


# --- evaluation -----------------------------------------------------------------------


@dataclass(slots=True)
class Candidate:
    seq: int
    meta: MessageMeta
    recent: bool
    data: bytes | None = None
    save_date: float | None = None  # RFC 8514 (the internal date when unknown)
    _part: bs.Part | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)
    _head: str | None = field(default=None, repr=False)
    _fields: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _headers: bs.Headers | None = field(default=None, repr=False)
    _header_bytes: bytes | None = field(default=None, repr=False)
    _lower: bytes | None = field(default=None, repr=False)

    @property
    def header_bytes(self) -> bytes:
        if self._header_bytes is None:
            self._header_bytes = bs._split_header(self.data or b"")[0]
        return self._header_bytes

    @property
    def headers(self) -> bs.Headers:
        """The header fields alone (no MIME parse)."""
        if self._headers is None:
            self._headers = bs.Headers(self.header_bytes)
        return self._headers

    def cannot_contain(self, needle: str) -> bool:
        """A quick no for BODY/TEXT: an ASCII needle absent from a message that is plain
        ASCII without encoded words or transfer encodings cannot be in its decoded text
        either (decoding such a message changes nothing)."""
        if not needle.isascii():
            return False
        if self._lower is None:
            data = self.data or b""
            plain = data.isascii() and b"=?" not in data
            low = data.lower()
            if plain and (b"base64" in low or b"quoted-printable" in low or b"utf-7" in low):
                plain = False
            self._lower = low if plain else b""
        return bool(self._lower) and needle.lower().encode() not in self._lower

    @property
    def part(self) -> bs.Part:
        if self._part is None:
            self._part = bs.parse(self.data or b"")
        return self._part

    @property
    def text(self) -> str:
        """The decoded body text, case-folded; computed once for all BODY/TEXT keys."""
        if self._text is None:
            self._text = text_of(self.part).casefold()
        return self._text

    def header_texts(self, name: str) -> list[str]:
        """The decoded, case-folded values of one header field, once per message however
        many keys name it (``field_texts``)."""
        key = name.upper()
        texts = self._fields.get(key)
        if texts is None:
            texts = self._fields[key] = field_texts(self.headers, key)
        return texts

    def search_fields(self) -> str | None:
        """SEARCH_FIELDS' texts as one string for the store (None: not keepable)."""
        return join_fields([self.header_texts(name) for name in SEARCH_FIELDS])

    def use_search_fields(self, kept: str) -> None:
        """Take SEARCH_FIELDS' texts from what ``search_fields`` gave (no bytes needed)."""
        parts = kept.split(_FIELD_SEP)
        if len(parts) != len(SEARCH_FIELDS):
            raise ValueError("kept search fields do not match SEARCH_FIELDS")
        for name, part in zip(SEARCH_FIELDS, parts, strict=True):
            self._fields[name] = part.split(_VALUE_SEP)[1:]

    @property
    def head(self) -> str:
        """The decoded header, case-folded (TEXT)."""
        if self._head is None:
            self._head = _decode(self.header_bytes.decode("utf-8", "replace")).casefold()
        return self._head


@dataclass(slots=True)
class SearchContext:
    count: int  # messages in the mailbox
    top_uid: int  # highest uid in the mailbox
    saved_uids: frozenset[int] = frozenset()
    now: float = field(default_factory=time.time)  # OLDER/YOUNGER count back from here
    # a SEQ/UID key's ranges, sorted and merged once: (key, starts, ends) by id of the key
    # (the key is kept so that its id cannot be reused by another)
    _spans: dict[int, tuple[Key, list[int], list[int]]] = field(
        default_factory=dict, repr=False)

    def in_set(self, k: Key, s: SeqSet, n: int, top: int) -> bool:
        """``n`` in the sequence set, ``*`` being ``top``: a binary search, so a set of
        thousands of ranges costs log(ranges) per message, not ranges."""
        entry = self._spans.get(id(k))
        if entry is not None and entry[0] is k:
            _, starts, ends = entry
        else:
            pairs = sorted(
                (min(a, b), max(a, b))
                for a, b in ((top if lo == STAR else lo, top if hi == STAR else hi)
                             for lo, hi in s.ranges))
            starts, ends = [], []
            for a, b in pairs:
                if ends and a <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], b)
                else:
                    starts.append(a)
                    ends.append(b)
            self._spans[id(k)] = (k, starts, ends)
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= ends[i]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no store takes them as text
        return False
    return True


def field_texts(headers: bs.Headers, name: str) -> list[str]:
    """The decoded, case-folded values of one header field (``name`` upper-case).
    Address fields also carry their parsed addresses, so comments and folding inside an
    address (`<user (c)@ (c) domain>`) do not hide it, as Dovecot."""
    values = headers.header_values(name)
    if name in _ADDRESS_HEADERS:
        values = [v + "\n" + " ".join(
            f"{a.name or ''} <{a.mailbox or ''}@{a.host or ''}>"
            for a in bs.parse_address_list(v)) for v in values]
    return [_decode(v).casefold() for v in values]


def join_fields(texts: list[list[str]]) -> str | None:
    """SEARCH_FIELDS' texts (one list per field) as the string the store keeps; None when
    a text holds a separator, a NUL (PostgreSQL text cannot) or a lone surrogate."""
    kept = _FIELD_SEP.join("".join(_VALUE_SEP + t for t in values) for values in texts)
    if (kept.count(_FIELD_SEP) != len(SEARCH_FIELDS) - 1
            or sum(len(values) for values in texts) != kept.count(_VALUE_SEP)
            or "\x00" in kept or not _encodable(kept)):
        return None
    return kept


def search_fields_of(data: bytes | bs.Headers) -> str | None:
    """The kept SEARCH texts of a message's bytes or its split header (only the header
    is read): what ``Candidate.search_fields`` gives, for the background keeper."""
    headers = data if isinstance(data, bs.Headers) else bs.Headers(bs._split_header(data)[0])
    return join_fields([field_texts(headers, name) for name in SEARCH_FIELDS])


def _decode(value: str) -> str:
    if "=?" not in value:  # no encoded word: decoding gives the same text, slower
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _day(ts: float) -> tuple[int, int, int]:
    t = time.gmtime(ts)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def _compare(op: str, day: tuple[int, int, int], d: Date) -> bool:
    if op == "BEFORE":
        return day < d.ordinal()
    if op == "ON":
        return day == d.ordinal()
    return day >= d.ordinal()  # SINCE


def _sent_day(part: bs.Headers) -> tuple[int, int, int] | None:
    value = part.header_value("Date")
    if not value:
        return None
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return (parsed[0], parsed[1], parsed[2])


def text_of(part: bs.Part, depth: int = 0) -> str:
    """Decoded text of the body for BODY/TEXT searches: text/* leaves and nested messages."""
    if depth > 20:
        return ""
    if part.is_multipart:
        return "\n".join(text_of(c, depth + 1) for c in part.children)
    if part.message is not None:
        inner = part.message
        headers = "\n".join(_decode(v) for n, _ in inner.fields() for v in inner.header_values(n))
        return headers + "\n" + text_of(inner, depth + 1)
    if not part.content_type.startswith("text/") and part.msg.get("Content-Type"):
        return ""
    try:
        raw = bs.decode_body(part)
    except bs.UnknownCTE:
        raw = part.body
    charset = part.msg.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def matches(k: Key, c: Candidate, ctx: SearchContext) -> bool:
    op = k.op
    if op == "ALL":
        return True
    if op == "AND":
        return all(matches(sub, c, ctx) for sub in k.args if isinstance(sub, Key))
    if op == "OR":
        a, b = k.args
        assert isinstance(a, Key) and isinstance(b, Key)
        return matches(a, c, ctx) or matches(b, c, ctx)
    if op == "NOT":
        (a,) = k.args
        assert isinstance(a, Key)
        return not matches(a, c, ctx)
    if op == "FLAG":
        flag, present = k.args
        has = any(f.lower() == str(flag).lower() for f in c.meta.flags)
        return has == present
    if op == "NEW":
        return c.recent and "\\Seen" not in c.meta.flags
    if op == "OLD":
        return not c.recent
    if op == "RECENT":
        return c.recent
    if op == "SEQ":
        (s,) = k.args
        assert isinstance(s, SeqSet)
        return ctx.in_set(k, s, c.seq, ctx.count)
    if op == "UID":
        (s,) = k.args
        assert isinstance(s, SeqSet)
        return ctx.in_set(k, s, c.meta.uid, ctx.top_uid)
    if op in ("SAVED", "SAVED_UID"):
        return c.meta.uid in ctx.saved_uids
    if op == "SIZE":
        which, n = k.args
        assert isinstance(n, int)
        return c.meta.size > n if which == "LARGER" else c.meta.size < n
    if op == "MODSEQ":
        (n,) = k.args
        assert isinstance(n, int)
        return c.meta.modseq >= n
    if op == "AGE":
        # RFC 5032 §2: OLDER n, received more than n seconds ago; YOUNGER n, within the
        # last n seconds (the internal date with its time, not its day): complements
        which, n = k.args
        assert isinstance(n, int)
        older = c.meta.internaldate <= ctx.now - n
        return older if which == "OLDER" else not older
    if op == "DATE":
        which, d = k.args
        assert isinstance(d, Date)
        return _compare(str(which), _day(c.meta.internaldate), d)
    if op == "SAVEDDATE":
        which, d = k.args
        assert isinstance(d, Date)
        saved = c.save_date if c.save_date is not None else c.meta.internaldate
        return _compare(str(which), _day(saved), d)
    if op == "EMAILID":
        return k.args[0] == email_id(c.meta)
    if op == "THREADID":
        return False  # no thread ids (THREADID NIL)
    if op == "SENTDATE":
        which, d = k.args
        assert isinstance(d, Date)
        day = _sent_day(c.headers)
        return day is not None and _compare(str(which), day, d)
    if op == "HEADER":
        name, needle = (str(x) for x in k.args)
        texts = c.header_texts(name)
        if not needle:
            return bool(texts)
        folded = needle.casefold()
        return any(folded in t for t in texts)
    if op == "BODY":
        if c.cannot_contain(str(k.args[0])):
            return False
        return str(k.args[0]).casefold() in c.text
    if op == "TEXT":
        if c.cannot_contain(str(k.args[0])):
            return False
        needle = str(k.args[0]).casefold()
        return needle in c.head or needle in c.text
    raise AssertionError(op)
