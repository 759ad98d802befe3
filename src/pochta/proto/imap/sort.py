"""SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267) and PARTIAL
(RFC 9394): parsing, sort keys, base subjects and both threading algorithms. Pure: the
caller gives each message's metadata and parsed header (``bs.Part`` of the header alone
is enough)."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from pochta.mail.model import MessageMeta, SortKeys
from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.search import SearchProgram, parse_partial, parse_search

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"}
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
# UPDATE and CONTEXT: CONTEXT=SORT (RFC 5267 §4)
ESORT_RETURNS = {"MIN", "MAX", "ALL", "COUNT", "PARTIAL", "UPDATE", "CONTEXT"}


@dataclass(slots=True)
class SortRequest:
    criteria: list[tuple[str, bool]]  # (key, reverse)
    search: SearchProgram
    returns: list[str] | None = None  # ESORT's RETURN (...), None for a plain SORT
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL lo:hi), RFC 9394


def _returns(r: Reader, allowed: set[str]) -> tuple[list[str], tuple[int, int] | None]:
    r.expect("(")
    out: list[str] = []
    partial: tuple[int, int] | None = None
    while not r.accept(")"):
        if out:
            r.sp()
        opt = r.atom().upper()
        if opt not in allowed:
            raise ParseError(f"unknown RETURN option {opt}")
        if opt == "PARTIAL":
            r.sp()
            partial = parse_partial(r)
        out.append(opt)
    return out, partial


def parse_sort(r: Reader) -> SortRequest:
    """After "SORT SP": [RETURN (...) SP] (criteria) SP charset SP search-keys."""
    returns: list[str] | None = None
    partial = None
    if r.accept("RETURN "):
        returns, partial = _returns(r, ESORT_RETURNS)
        r.sp()
    r.expect("(")
    criteria: list[tuple[str, bool]] = []
    reverse = False
    while True:
        word = r.atom().upper()
        if word == "REVERSE":
            if reverse:
                raise ParseError("REVERSE twice")
            reverse = True
            r.sp()
            continue
        if word not in SORT_KEYS:
            raise ParseError(f"unknown sort key {word}")
        criteria.append((word, reverse))
        reverse = False
        if r.accept(")"):
            break
        r.sp()
    if reverse:
        raise ParseError("REVERSE needs a sort key")
    r.sp()
    charset = r.astring().upper()
    r.sp()
    search = parse_search(r, esearch_allowed=False)
    search.charset = charset
    return SortRequest(criteria, search, returns, partial)


def parse_thread(r: Reader) -> tuple[str, SearchProgram]:
    """After "THREAD SP": algorithm SP charset SP search-keys."""
    algorithm = r.atom().upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError(f"unknown threading algorithm {algorithm}")
    r.sp()
    charset = r.astring().upper()
    r.sp()
    search = parse_search(r, esearch_allowed=False)
    search.charset = charset
    return algorithm, search


# --- base subject (RFC 5256 §2.1) ------------------------------------------------------

_BLOB = r"\[[^\[\]]*\]"
_SUBJ_LEADER = re.compile(r"\A(?:(?:" + _BLOB + r")\s*)*(?:re|fwd?)\s*(?:" + _BLOB
                          + r")?:\s*", re.IGNORECASE)
_SUBJ_BLOB = re.compile(r"\A" + _BLOB + r"\s*")
_SUBJ_TRAILER = re.compile(r"(?:\s*\(fwd\)|\s+)\Z", re.IGNORECASE)
_FWD = re.compile(r"\A\[fwd:\s*(.*)\]\Z", re.IGNORECASE | re.DOTALL)


def _decode(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def base_subject(subject: str) -> tuple[str, bool]:
    """(base subject, whether it was a reply or forward) per RFC 5256 §2.1, case-folded
    for i;unicode-casemap-ish comparison."""
    s = re.sub(r"\s+", " ", _decode(subject)).strip()
    reply = False
    while True:
        while True:  # (2) trailers
            t = _SUBJ_TRAILER.sub("", s)
            if t == s:
                break
            reply = reply or t.lower() != s.lower().rstrip()
            s = t
        while True:  # (3)-(5) leaders and blobs
            m = _SUBJ_LEADER.match(s)
            if m:
                s = s[m.end():]
                reply = True
                continue
            m = _SUBJ_BLOB.match(s)
            if m and s[m.end():]:
                s = s[m.end():]
                continue
            break
        m = _FWD.match(s)  # (6) [fwd: ...]
        if m:
            s = m.group(1)
            reply = True
            continue
        break
    return s.upper(), reply


# --- sort keys -------------------------------------------------------------------------

Headers = bs.Headers


def _first_address(part: Headers, name: str) -> bs.Address | None:
    value = part.header_value(name)
    if not value:
        return None
    addrs = bs.parse_address_list(value)
    return addrs[0] if addrs else None


def _mailbox_key(part: Headers, name: str) -> str:
    a = _first_address(part, name)
    return (a.mailbox or "").upper() if a is not None else ""


def _display_key(part: Headers, name: str) -> str:
    """RFC 5957 §4: the display-name of the first address, else its addr-spec."""
    a = _first_address(part, name)
    if a is None:
        return ""
    if a.name:
        return _decode(a.name).upper()
    return f"{a.mailbox or ''}@{a.host or ''}".upper()


def sent_date(part: Headers) -> float | None:
    """The Date: header in UTC seconds; None when missing or invalid (the caller uses the
    internal date then, RFC 5256 §2.2)."""
    value = part.header_value("Date")
    if value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            try:
                return float(email.utils.mktime_tz(parsed))
            except (OverflowError, ValueError):
                pass
    return None


def compute_sort_keys(h: Headers) -> SortKeys:
    """Everything SORT and THREAD use of one message's header (kept by the store)."""
    subject, reply = base_subject(h.header_value("Subject") or "")
    mid = _msgids(h.header_value("Message-ID"))
    refs = _msgids(h.header_value("References")) or _msgids(h.header_value("In-Reply-To"))[:1]
    return SortKeys(
        date=sent_date(h), subject=subject, reply=reply,
        from_=_mailbox_key(h, "From"), to=_mailbox_key(h, "To"), cc=_mailbox_key(h, "Cc"),
        display_from=_display_key(h, "From"), display_to=_display_key(h, "To"),
        message_id=mid[0] if mid else "", references=" ".join(refs))


@dataclass(slots=True)
class SortItem:
    """One message for SORT/THREAD: its number (seq or uid), metadata and keys."""

    seq: int
    meta: MessageMeta
    keys: SortKeys

    def key(self, name: str) -> object:
        k = self.keys
        if name == "DATE":
            return k.date if k.date is not None else self.meta.internaldate
        if name == "ARRIVAL":
            return self.meta.internaldate
        if name == "SIZE":
            return self.meta.size
        if name == "SUBJECT":
            return k.subject
        if name == "FROM":
            return k.from_
        if name == "TO":
            return k.to
        if name == "CC":
            return k.cc
        if name == "DISPLAYFROM":
            return k.display_from
        if name == "DISPLAYTO":
            return k.display_to
        raise AssertionError(name)


class _Desc:
    """Wraps a key to reverse its order inside a tuple key."""

    __slots__ = ("v",)

    def __init__(self, v: object) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.v < self.v)  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


def sort_items(items: list[SortItem], criteria: list[tuple[str, bool]]) -> list[SortItem]:
    """Sorted by the criteria, ties by sequence number (RFC 5256 §3)."""

    def key(it: SortItem) -> tuple[object, ...]:
        parts: list[object] = []
        for name, rev in criteria:
            v = it.key(name)
            parts.append(_Desc(v) if rev else v)
        parts.append(it.seq)
        return tuple(parts)

    return sorted(items, key=key)


# --- THREAD ----------------------------------------------------------------------------

Thread = tuple[int, list["Thread"]]  # (message number, children); 0: a dummy


def _render(nodes: list[Thread]) -> bytes:
    def one(node: Thread) -> bytes:
        # a chain of single children is written flat: (1 2 3); siblings in parens
        out: list[bytes] = []
        n, kids = node
        if n:
            out.append(b"%d" % n)
        while len(kids) == 1:
            n, kids = kids[0]
            if n:
                out.append(b"%d" % n)
        if kids:
            out.append(b"".join(b"(" + one(k) + b")" for k in kids))
        return b" ".join(out)

    return b"".join(b"(" + one(t) + b")" for t in nodes)


def render_threads(nodes: list[Thread]) -> bytes:
    return b"* THREAD " + _render(nodes) + b"\r\n"


def thread_orderedsubject(items: list[SortItem]) -> list[Thread]:
    """RFC 5256 §2.4 (ORDEREDSUBJECT): group by base subject, sort each group by sent
    date; the first is the parent, the others its children; groups by their first date."""
    groups: dict[str, list[SortItem]] = {}
    for it in sort_items(items, [("SUBJECT", False), ("DATE", False)]):
        groups.setdefault(str(it.key("SUBJECT")), []).append(it)
    threads = [g for g in groups.values()]
    threads.sort(key=lambda g: (float(g[0].key("DATE")), g[0].seq))  # type: ignore[arg-type]
    return [(g[0].seq, [(x.seq, []) for x in g[1:]]) for g in threads]


_MSGID = re.compile(r"<[^<>]+>")


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


@dataclass(eq=False, slots=True)
class _Container:
    item: SortItem | None = None
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def ancestor_of(self, other: _Container) -> bool:
        c: _Container | None = other
        seen = 0
        while c is not None and seen < 10000:
            if c is self:
                return True
            c = c.parent
            seen += 1
        return False

    def date(self) -> tuple[float, int]:
        if self.item is not None:
            return (float(self.item.key("DATE")), self.item.seq)  # type: ignore[arg-type]
        # a dummy sorts by its first child (RFC 5256 §2.2 (4))
        kids = sorted(c.date() for c in self.children)
        return kids[0] if kids else (0.0, 0)


def thread_references(items: list[SortItem]) -> list[Thread]:
    """RFC 5256 §2.5 (REFERENCES, after JWZ)."""
    ids: dict[str, _Container] = {}
    roots_extra: list[_Container] = []
    for it in sort_items(items, [("DATE", False)]):
        mid = it.keys.message_id or None
        if mid is None or (mid in ids and ids[mid].item is not None):
            c = _Container(it)  # no or duplicate Message-ID: a unique one (§2.5 (1))
            roots_extra.append(c)
        else:
            c = ids.setdefault(mid, _Container())
            c.item = it
        refs = it.keys.references.split()
        prev: _Container | None = None
        for ref in refs:
            rc = ids.setdefault(ref, _Container())
            if prev is not None and rc.parent is None and not rc.ancestor_of(prev) \
                    and rc is not prev:
                rc.parent = prev
                prev.children.append(rc)
            prev = rc
        if prev is not None and (prev is c or c.ancestor_of(prev)):
            prev = None
        if c.parent is not None:
            c.parent.children.remove(c)
            c.parent = None
        if prev is not None:
            c.parent = prev
            prev.children.append(c)
    roots = [c for c in list(ids.values()) + roots_extra if c.parent is None]

    def prune(c: _Container) -> list[_Container]:
        """Drop empty dummies; promote their children (§2.5 (3))."""
        kids: list[_Container] = []
        for k in c.children:
            kids += prune(k)
        c.children = kids
        for k in kids:
            k.parent = c
        if c.item is None:
            if not kids:
                return []
            if c.parent is not None or len(kids) == 1:
                for k in kids:
                    k.parent = None
                return kids
        return [c]

    top: list[_Container] = []
    for r in roots:
        for x in prune(r):
            x.parent = None
            top.append(x)
    # (4) sort siblings by date; (5) group roots by base subject
    def sort_tree(c: _Container) -> None:
        c.children.sort(key=lambda k: k.date())
        for k in c.children:
            sort_tree(k)

    for t in top:
        sort_tree(t)
    top.sort(key=lambda k: k.date())
    # (5) threads whose roots have the same base subject are gathered
    def first_item(c: _Container) -> SortItem | None:
        return c.item if c.item is not None else (c.children[0].item if c.children else None)

    def subject(c: _Container) -> str:
        item = first_item(c)
        return str(item.key("SUBJECT")) if item is not None else ""

    def is_reply(c: _Container) -> bool:
        return c.item is not None and c.item.keys.reply

    table: dict[str, _Container] = {}
    for t in top:
        subj = subject(t)
        if not subj:
            continue
        old = table.get(subj)
        if old is None or (old.item is not None and t.item is None) or (
                is_reply(old) and not is_reply(t)):
            table[subj] = t
    result: list[_Container] = []
    position: dict[int, int] = {}  # id(container) -> index in result (no O(n) lookups)

    def add(c: _Container) -> None:
        if id(c) not in position:
            position[id(c)] = len(result)
            result.append(c)

    for t in top:
        subj = subject(t)
        rep = table.get(subj) if subj else None
        if rep is None or rep is t:
            add(t)
            continue
        add(rep)
        if rep.item is None and t.item is None:
            rep.children += t.children
        elif rep.item is None or (t.item is not None and is_reply(t) and not is_reply(rep)):
            rep.children.append(t)
        else:
            dummy = _Container(None, None, [rep, t])
            at = position.pop(id(rep))
            result[at] = dummy
            position[id(dummy)] = at
            table[subj] = dummy
    for t in result:
        sort_tree(t)
    result.sort(key=lambda k: k.date())

    def out(c: _Container) -> Thread:
        return (c.item.seq if c.item is not None else 0, [out(k) for k in c.children])

    return [out(t) for t in result]


def seq_list(numbers: Sequence[int]) -> bytes:
    """Numbers in the given (sort) order as a sequence-set: ascending runs become a:b."""
    if not numbers:
        return b""
    parts: list[bytes] = []
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(parts)
