"""SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267) and PARTIAL
(RFC 9394): parsing, sort keys, base subjects and both threading algorithms. Pure: the
caller gives each message's metadata and parsed header (``bs.Part`` of the header alone
is enough)."""

from __future__ import annotations

import bisect
import email.utils
import gc
import itertools
import re
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.header import decode_header, make_header

from pochta.mail.model import MessageMeta, SortKeys
from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.search import SearchProgram, parse_partial, parse_search
from pochta.proto.imap.sortorder import value as criterion_value

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
    if "=?" not in value:  # no encoded word: decoding gives the same text (search._decode)
        return value
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
    return _mailbox_of(_first_address(part, name))


def _mailbox_of(a: bs.Address | None) -> str:
    return (a.mailbox or "").upper() if a is not None else ""


def _display_of(a: bs.Address | None) -> str:
    """RFC 5957 §4: the display-name of the first address, else its addr-spec."""
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
    sender, to = _first_address(h, "From"), _first_address(h, "To")  # each parsed once
    return SortKeys(
        date=sent_date(h), subject=subject, reply=reply,
        from_=_mailbox_of(sender), to=_mailbox_of(to), cc=_mailbox_key(h, "Cc"),
        display_from=_display_of(sender), display_to=_display_of(to),
        message_id=mid[0] if mid else "", references=" ".join(refs))


@dataclass(slots=True)
class SortItem:
    """One message for SORT/THREAD: its number (seq or uid), metadata and keys."""

    seq: int
    meta: MessageMeta
    keys: SortKeys

    def key(self, name: str) -> object:
        return criterion_value(name, self.meta, self.keys)


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


@contextmanager
def collector_paused() -> Iterator[None]:
    """Threading a big mailbox allocates a few hundred thousand small lists and tuples and
    no reference cycles; left on, the cycle collector walks the whole heap many times
    over meanwhile (half of the time at 100,000 messages). Paused for this synchronous
    step only, and only when it was running."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _date_key(it: SortItem) -> tuple[float, int]:
    """The sent date (else the internal date, RFC 5256 §2.2), ties by number."""
    d = it.keys.date
    return (float(it.meta.internaldate if d is None else d), it.seq)


@dataclass(slots=True)
class ThreadInput:
    """The messages to thread as parallel lists (no object per message): their numbers
    (sequence numbers or UIDs, in one ascending order), sent dates (else internal dates,
    RFC 5256 §2.2) and kept keys. Built from SortItems, or straight from the store's
    columns (``ThreadColumns``) for THREAD ... ALL."""

    numbers: list[int]
    dates: list[float]
    subjects: list[str]
    replies: list[bool]
    message_ids: list[str]
    references: list[str]

    @classmethod
    def of_items(cls, items: Sequence[SortItem]) -> ThreadInput:
        items = sorted(items, key=lambda it: it.seq)
        keys = [it.keys for it in items]
        return cls([it.seq for it in items], [_date_key(it)[0] for it in items],
                   [k.subject for k in keys], [k.reply for k in keys],
                   [k.message_id for k in keys], [k.references for k in keys])

    def date_ranks(self) -> tuple[list[int], list[int]]:
        """(the messages in (date, number) order, each message's rank in it): every
        date comparison below is then one of small integers. Numbers ascend with the
        index, so a stable sort by date alone breaks ties by number."""
        order = sorted(range(len(self.dates)), key=self.dates.__getitem__)
        rank = [0] * len(order)
        for r, i in enumerate(order):
            rank[i] = r
        return order, rank


def thread_orderedsubject(items: list[SortItem]) -> list[Thread]:
    """RFC 5256 §2.4 (ORDEREDSUBJECT): group by base subject, sort each group by sent
    date; the first is the parent, the others its children; groups by their first date.
    One sort of precomputed keys; a group is a run of equal subjects in that order."""
    return orderedsubject_threads(ThreadInput.of_items(items))


def orderedsubject_threads(m: ThreadInput) -> list[Thread]:
    with collector_paused():
        return _orderedsubject(m)


def _orderedsubject(m: ThreadInput) -> list[Thread]:
    rows = sorted(zip(m.subjects, m.dates, m.numbers, strict=True))
    threads: list[tuple[float, int, list[Thread]]] = []
    kids: list[Thread] = []
    subject: str | None = None
    for subj, date, n in rows:
        if subj == subject:
            kids.append((n, []))
        else:
            subject = subj
            kids = []
            threads.append((date, n, kids))
    threads.sort(key=lambda g: (g[0], g[1]))
    return [(n, kids) for _, n, kids in threads]


def orderedsubject_answer(m: ThreadInput) -> bytes:
    """``render_threads(orderedsubject_threads(m))`` without the Thread tuples: two
    stable sorts with C-level keys (date, then base subject: ties by number, as the
    numbers ascend with the index) and the groups written as they are cut."""
    with collector_paused():
        numbers, subjects = m.numbers, m.subjects
        order, rank = m.date_ranks()
        order.sort(key=subjects.__getitem__)
        groups: list[tuple[int, bytes]] = []  # (rank of the group's first, its text)
        n = len(order)
        at = 0
        while at < n:
            first = order[at]
            subject = subjects[first]
            end = at + 1
            while end < n and subjects[order[end]] == subject:
                end += 1
            if end - at == 1:
                text = b"(%d)" % numbers[first]
            elif end - at == 2:  # one child: a chain
                text = b"(%d %d)" % (numbers[first], numbers[order[at + 1]])
            else:
                text = b"(%d " % numbers[first] + b"".join(
                    [b"(%d)" % numbers[i] for i in order[at + 1 : end]]) + b")"
            groups.append((rank[first], text))
            at = end
        groups.sort()
        return b"* THREAD " + b"".join([text for _, text in groups]) + b"\r\n"


_MSGID = re.compile(r"<[^<>]+>")


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


_LOOP_LIMIT = 10000  # a parent walk gives up after this many steps (a loop guard)
_SEP = "\x00"  # between the Message-IDs of a packed ThreadLinks
_FEW_INSERTS = 3  # arrivals among older mail given ranks one by one (a pass: 8-10 ms, all: 30-40)
_FEW_GONE = 16  # expunged rows taken out of ThreadLinks one by one, at most (else relink)
_FEW_LOOKUPS = 16  # Message-IDs looked up one by one (ThreadLinks._lookups)


def _ints(values: list[int]) -> bytes:
    return array("i", values).tobytes()


def thread_references(items: list[SortItem]) -> list[Thread]:
    """RFC 5256 §2.5 (REFERENCES, after JWZ)."""
    return references_threads(ThreadInput.of_items(items))


def references_threads(m: ThreadInput) -> list[Thread]:
    with collector_paused():
        return _Jwz(m, ThreadLinks(m)).threads()


def references_answer(m: ThreadInput) -> bytes:
    """``render_threads(references_threads(m))`` without the Thread tuples in between
    (200,000 objects for 100,000 messages)."""
    with collector_paused():
        return _Jwz(m, ThreadLinks(m)).render()


class ThreadLinks:
    """Step 1 of REFERENCES (RFC 5256 §2.5 (1)) for the rows of a ThreadInput, kept so
    that arrivals can be linked in without linking the whole mailbox again (Dovecot keeps
    the same links in its thread index). JWZ's containers are parallel lists indexed by
    container number, no object per message and no reference cycles: ``item`` is the
    row (-1: a dummy), ``parent`` -1 for none, ``kids`` None for none.

    Step 1 visits the messages by date (the first by date keeps a duplicated
    Message-ID, and an earlier message's links win), so an arrival is linked in only
    when that gives exactly the links of a full pass (``extend``): when it is dated
    after every row linked so far (the full pass would visit it last), or when no
    other row can be affected by where it is visited; an expunged row is taken out only
    when no other row can tell its visit happened (``remove``). Otherwise the caller
    links all rows again. ``ckey`` keeps each container's step-4 sort key (twice its
    row's date rank; ranks may have gaps, only their order counts). The later steps
    never change these lists (``_Jwz`` copies what it changes); they only sort sibling
    lists in place, and sibling order is not an input of step 1 nor of the answer
    (every sibling list is sorted by a key that is unique among siblings)."""

    __slots__ = ("ckey", "dates", "extra", "ids", "item", "keys", "kids", "order", "packed",
                 "parent", "rank", "rows")

    def __init__(self, m: ThreadInput) -> None:
        self.rows = 0
        self.dates: list[float] = []
        self.item: list[int] = []
        self.parent: list[int] = []
        self.kids: list[list[int] | None] = []
        # Message-ID -> container; None after ``unpack``: then ``keys`` (each container's
        # Message-ID, "" for a unique one) holds the same, and the dict (30 ms to build
        # for 100,000) is made only when many lookups need it (``_lookups``)
        ids: dict[str, int] = {}
        self.ids: dict[str, int] | None = ids
        self.keys: list[str] | None = None
        self.packed: tuple[list[bytes], str] | None = None  # (``unpack``)
        self.extra: list[int] = []
        self.order, self.rank = m.date_ranks()
        self.dates = list(m.dates)
        self.rows = len(m.dates)
        self._link(m, self.order, ids)
        # each container's sort key for step 4 (twice its row's rank; -1 for a dummy),
        # kept along: read through ``item`` it is a random walk over ``rank``
        self.ckey = [2 * self.rank[i] if i >= 0 else -1 for i in self.item]

    def _key_list(self) -> list[str]:
        self._ready()
        if self.keys is not None:
            return self.keys
        keys = [""] * len(self.item)
        for mid, c in (self.ids or {}).items():
            keys[c] = mid
        return keys

    def pack(self) -> tuple[object, ...] | None:
        """The links as a few flat values (for a snapshot: ``unpack``): the integer lists
        as array bytes, the children as one array cut by ends, the containers'
        Message-IDs as one string. None when a Message-ID holds the separator."""
        keys = self._key_list()
        joined = _SEP.join(keys)
        if joined.count(_SEP) != max(len(keys) - 1, 0):
            return None
        with_kids: list[int] = []
        ends: list[int] = []
        flat: list[int] = []
        for c, ks in enumerate(self.kids):
            if ks:
                with_kids.append(c)
                flat.extend(ks)
                ends.append(len(flat))
        return (len(keys), _ints(self.item), _ints(self.parent), _ints(with_kids),
                _ints(ends), _ints(flat), joined, _ints(self.extra), _ints(self.order),
                _ints(self.rank), _ints(self.ckey))

    @classmethod
    def unpack(cls, m: ThreadInput, packed: object) -> ThreadLinks | None:
        """The links ``pack`` gave for the rows of ``m`` (the rows they were made from);
        None when ``packed`` does not have that shape for that many rows. The lists are
        made when first used (``_ready``: 15-25 ms for 100,000 messages), not for a
        THREAD ORDEREDSUBJECT."""
        n = len(m.dates)
        if not isinstance(packed, tuple) or len(packed) != 11:
            return None
        size, *arrays = packed
        joined = arrays.pop(5)
        if not isinstance(size, int) or not isinstance(joined, str):
            return None
        packs = [a for a in arrays if isinstance(a, bytes) and len(a) % 4 == 0]
        if len(packs) != len(arrays):
            return None
        item, parent, with_kids, ends, flat, _, order, rank, ckey = (len(a) // 4 for a in packs)
        if not (item == parent == ckey == size >= n == order == rank and with_kids == ends
                and joined.count(_SEP) == max(size - 1, 0) and (size or not joined)
                and (array("i", packs[3][-4:])[0] if ends else 0) == flat):
            return None
        links = cls.__new__(cls)
        links.packed = (packs, joined)
        links.dates = list(m.dates)
        links.rows = n
        return links

    def _ready(self) -> None:
        """The lists of unpacked links, made on first use."""
        packed = self.packed
        if packed is None:
            return
        arrays, joined = packed
        item, parent, with_kids, ends, flat, extra, order, rank, ckey = (
            array("i", a).tolist() for a in arrays)
        kids: list[list[int] | None] = [None] * len(item)
        start = 0
        for c, end in zip(with_kids, ends, strict=True):
            kids[c] = flat[start:end]
            start = end
        self.item, self.parent, self.kids, self.extra = item, parent, kids, extra
        self.ids = None
        self.keys = joined.split(_SEP) if item else []
        self.order, self.rank, self.ckey = order, rank, ckey
        self.packed = None

    def _lookups(self, names: Sequence[str]) -> dict[str, int]:
        """The Message-ID table for linking in (or taking out) rows that use these
        Message-IDs: the whole one, or after ``unpack`` only these names' entries, found
        in ``keys`` by a scan in C (0.5 ms per name for 150,000 containers, or one pass
        hashing every key for many names, instead of building the whole dict: 30-50
        ms); ``_lookups_done`` then writes new entries back into ``keys``."""
        if self.ids is not None:
            return self.ids
        keys = self.keys
        assert keys is not None
        wanted = {name for name in names if name}
        found: dict[str, int] = {}
        if len(wanted) <= _FEW_LOOKUPS:
            for name in wanted:
                with suppress(ValueError):  # (not kept)
                    found[name] = keys.index(name)
        else:
            for c in itertools.compress(range(len(keys)), map(wanted.__contains__, keys)):
                found[keys[c]] = c
        return found

    def _lookups_done(self, found: dict[str, int]) -> None:
        keys = self.keys
        if keys is None:
            return
        keys.extend([""] * (len(self.item) - len(keys)))
        for name, c in found.items():
            keys[c] = name

    def extend(self, m: ThreadInput) -> bool:
        """Link in the rows of ``m`` after the ones linked already (arrivals: ``m``'s
        first rows must be the rows linked before, unchanged). False when one of them
        cannot be linked in exactly (then these links are unusable: link all again)."""
        new = range(self.rows, len(m.dates))
        if not new:
            return True
        self._ready()
        mids, all_refs, dates, order = m.message_ids, m.references, m.dates, self.order
        names = [mids[i] for i in new]
        for i in new:
            names.extend(all_refs[i].split())
        ids = self._lookups(names)
        # ranks follow the order (with gaps after ``remove``): an arrival dated last
        # takes one above the last; one dated among the others that of the row after
        # it, those from there on one more (a pass in row order: writing ranks in date
        # order is a random walk over the list, slower); after many, all made again
        rank, ckey = self.rank, self.ckey
        inserted = 0
        # one at a time, by UID: each is checked against the links of the rows before
        # it, which are then exactly those of a full pass over them (by induction)
        for i in new:
            date = dates[i]
            last = self.dates[order[-1]] if order else date
            if date < last and not self._commutes(ids, mids[i], all_refs[i]):
                self.rows = -1  # partly linked: unusable
                return False
            self.dates.append(date)
            c = self._link(m, [i], ids)
            ckey.extend([-1] * (len(self.item) - len(ckey)))  # (new dummies)
            if date >= last:
                rank.append(rank[order[-1]] + 1 if order else 0)
                order.append(i)
            else:
                at = bisect.bisect_right(order, date, key=self.dates.__getitem__)
                v = rank[order[at]]
                order.insert(at, i)
                inserted += 1
                if inserted <= _FEW_INSERTS:
                    rank = [r if r < v else r + 1 for r in rank]
                    ckey = [k if k < 2 * v else k + 2 for k in ckey]
                rank.append(v)
            ckey[c] = 2 * rank[i]
            self.rows = i + 1
        self._lookups_done(ids)
        if inserted > _FEW_INSERTS:
            rank = [0] * len(order)
            for r, i in enumerate(order):
                rank[i] = r
            ckey = [2 * rank[i] if i >= 0 else -1 for i in self.item]
        self.rank, self.ckey = rank, ckey
        return True

    @staticmethod
    def _commutes(ids: dict[str, int], mid: str, refs: str) -> bool:
        """Whether linking a message now gives the links that visiting it at its place by
        date would have (the rows visited after it there are dated after it): its
        Message-ID is new or absent (a unique one), named by none of the rows linked so
        far, so its container stays a leaf none of them links; and it names at most one
        other message, so its only link is its own container under that one (the links
        among several references depend on what later-dated messages linked first). The
        only other change, the referenced container existing earlier as a childless
        dummy, is one no later-dated message can tell apart from its absence."""
        if mid and mid in ids:
            return False
        distinct = set(refs.split())
        return len(distinct) <= 1 and mid not in distinct

    def remove(self, gone: Sequence[int], mids: Sequence[str], refs: Sequence[str],
               m: ThreadInput) -> bool:
        """Take the linked rows ``gone`` (ascending; their Message-IDs and References in
        ``mids``, ``refs``) out of the links (expunges), when that provably gives the
        links of a full pass over the other rows: ``m`` holds those, in the same order
        (maybe followed by arrivals not linked yet). False when one of them cannot be
        taken out so (then these links are unusable: link all again).

        Step 1 (RFC 5256 §2.5 (1)) visits a message X once: (A) its container C, new
        or a dummy made for its Message-ID, else a unique one; (B) containers for its
        references, each linked under the one before when neither links the other; (C)
        C put under the last reference. When X's Message-ID is named by no other row
        (neither referenced nor carried: C was new, holds no child, no row links it)
        and X names at most one other message R (then (B) links nothing), X's only
        traces are C and C under R (and R's container itself, when X alone names R: a
        childless dummy, parentless as X's first reference). No other row can tell C
        apart from its absence (nothing names it; a leaf is no one's ancestor), and R's
        container, made earlier, at X's visit, is what the first later row naming R
        would have made (nothing else hangs under it before; it has no parent when
        made by a first reference, and a later reference links it under the one
        before it as a new one would be). So the links without C, and without R's
        container when nobody else names R, are those of a full pass. Rows are taken
        out one at a time, each checked against the others (by induction); the
        containers left unused are childless parentless dummies that nothing names."""
        if not gone:
            return True
        self.rows, n = -1, self.rows  # unusable until all of them are out
        if len(gone) > _FEW_GONE:
            return False
        self._ready()
        item, parent, kids = self.item, self.parent, self.kids
        others = _SEP.join(m.references)  # (a Message-ID is "<...>": a substring test)
        carried = m.message_ids
        for k, row in enumerate(gone):
            mid, names = mids[k], set(refs[k].split())
            c = item.index(row)
            rest = [x for j, x in enumerate(mids) if j != k]
            rest_refs = [x for j, x in enumerate(refs) if j != k]
            owner = bool(mid) and (c not in self.extra)
            if not names and owner and (kids[c] or mid in others
                                        or any(mid in x for x in rest_refs)):
                if not self._unfill(c, mid, others, carried, rest, rest_refs):
                    return False
                continue
            if kids[c] or len(names) > 1 or mid in names:
                return False
            ids = self._lookups([mid, *names])
            if owner and (ids.get(mid) != c or mid in others or carried.count(mid) or mid in rest
                          or any(mid in x for x in rest_refs)):
                return False
            p = parent[c]
            if p >= 0:
                ks = kids[p]
                assert ks is not None
                ks.remove(c)
                if not ks:
                    kids[p] = None
                    (name,) = names or ("",)
                    if (item[p] < 0 and parent[p] < 0 and name and ids.get(name) == p
                            and name not in others and not any(name in x for x in rest_refs)):
                        del ids[name]  # a dummy named by X alone
                        self._unname(p, name)
            item[c], parent[c], kids[c], self.ckey[c] = -1, -1, None, -1
            if owner:
                del ids[mid]
                self._unname(c, mid)
            else:
                self.extra.remove(c)
            self._lookups_done(ids)
        # the rows after each gone one move up (a gone row is in ``order`` only now; a
        # pass in the lists' own order: item and order follow the dates, so a lookup
        # table indexed by row would be read at random, 5x slower)
        order = self.order
        for g in reversed(gone):
            order.remove(g)
            del self.dates[g]
            del self.rank[g]  # (the others keep theirs: the order, with a gap)
        if len(gone) == 1:
            g = gone[0]
            self.item = [i if i < g else i - 1 for i in item]
            self.order = [i if i < g else i - 1 for i in order]
        else:
            self.item = [i - bisect.bisect(gone, i) for i in item]
            self.order = [i - bisect.bisect(gone, i) for i in order]
        self.rows = n - len(gone)
        return True

    def _unfill(self, c: int, mid: str, others: str, carried: Sequence[str],
                rest: Sequence[str], rest_refs: Sequence[str]) -> bool:
        """Take out a row X that names no other message (a thread's first message)
        but whose container C others name or hang under. Without X, C is the dummy the
        first row naming X makes; X's visit only filled it (A) and cleared its parent
        (C, with no reference to put it under). When no other row carries X's
        Message-ID (it would fill C instead) and none names X after another reference
        (the only way a visit gives C a parent: (B)), C has no parent at any time of
        either pass, every later visit sees the same containers, and the links of a
        full pass over the other rows are these with C emptied (a dummy, sorted by its
        earliest child in step 4: RFC 5256 §2.5 (2)-(4))."""
        named = " " + mid  # after another reference (References are joined by spaces)
        ids = self._lookups([mid])
        if (ids.get(mid) != c or self.parent[c] >= 0 or named in others
                or carried.count(mid) or mid in rest or any(named in x for x in rest_refs)):
            return False
        self.item[c], self.ckey[c] = -1, -1
        self._lookups_done(ids)
        return True

    def _unname(self, c: int, name: str) -> None:
        """After ``del ids[name]``: the same in ``keys`` when that is the table."""
        if self.keys is not None and self.keys[c] == name:
            self.keys[c] = ""

    def _link(self, m: ThreadInput, rows: Sequence[int], ids: dict[str, int]) -> int:
        """Step 1 for these rows, visited in this order (``ids``: the Message-ID table,
        or the part of it these rows use); the container of the last one."""
        mids, all_refs = m.message_ids, m.references
        item, kids, parent, extra = self.item, self.kids, self.parent, self.extra
        add_item, add_parent, add_kids = item.append, parent.append, kids.append

        def is_ancestor(a: int, b: int) -> bool:
            """a is b or one of b's ancestors."""
            seen = 0
            while b >= 0 and seen < _LOOP_LIMIT:
                if b == a:
                    return True
                b = parent[b]
                seen += 1
            return False

        def link(p: int, c: int) -> None:
            parent[c] = p
            ks = kids[p]
            if ks is None:
                kids[p] = [c]
            else:
                ks.append(c)

        # (1) in date order (the first by date keeps a duplicated Message-ID)
        c = -1
        for i in rows:
            mid = mids[i]
            c = ids.get(mid, -1) if mid else -1
            if c >= 0 and item[c] < 0:
                item[c] = i
            else:
                known = c >= 0
                c = len(parent)
                add_item(i)
                add_parent(-1)
                add_kids(None)
                if mid and not known:
                    ids[mid] = c
                else:  # no or duplicate Message-ID: a unique one (§2.5 (1))
                    extra.append(c)
            prev = -1
            refs = all_refs[i]
            if refs:
                for ref in refs.split():
                    rc = ids.get(ref, -1)
                    if rc < 0:
                        rc = ids[ref] = len(parent)
                        add_item(-1)
                        add_kids(None)
                        # no children: an ancestor of nothing, linked at once
                        if prev >= 0:
                            add_parent(prev)
                            ks = kids[prev]
                            if ks is None:
                                kids[prev] = [rc]
                            else:
                                ks.append(rc)
                        else:
                            add_parent(-1)
                    elif prev >= 0 and parent[rc] < 0 and not is_ancestor(rc, prev):
                        link(prev, rc)
                    prev = rc
                # (a container without children is an ancestor of itself only)
                if prev >= 0 and (prev == c or (kids[c] is not None and is_ancestor(c, prev))):
                    prev = -1
            p = parent[c]
            if p >= 0:
                kids[p].remove(c)  # type: ignore[union-attr]
                parent[c] = -1
            if prev >= 0:
                parent[c] = prev
                ks = kids[prev]
                if ks is None:
                    kids[prev] = [c]
                else:
                    ks.append(c)
        return c

    def answer(self, m: ThreadInput) -> bytes:
        """The THREAD REFERENCES response for ``m``, whose rows are exactly the ones
        linked (their numbers and subjects are read from ``m``)."""
        assert self.rows == len(m.dates)
        with collector_paused():
            self._ready()
            return _Jwz(m, self).render()


class _Jwz:
    """Steps 2-5 of REFERENCES after the links of step 1 (``ThreadLinks``, left as they
    are: the lists changed here are copies); ``result`` holds the top containers in
    order."""

    __slots__ = ("item", "kids", "numbers", "result")

    def __init__(self, m: ThreadInput, links: ThreadLinks) -> None:
        self.numbers = m.numbers
        self.item = list(links.item)
        self.kids = list(links.kids)
        self.result = self._thread(m, links)

    def _thread(self, m: ThreadInput, links: ThreadLinks) -> list[int]:
        subjects, replies = m.subjects, m.replies
        order, rank, ckey = links.order, links.rank, links.ckey
        # a dummy with no children sorts as the date (0.0, 0) would among the messages
        # (ranks give the order; ``remove`` may leave gaps)
        at = bisect.bisect_left(order, 0.0, key=m.dates.__getitem__)
        empty = (2 * rank[order[at]] - 1 if at < len(order)
                 else 2 * rank[order[-1]] + 1 if order else -1)
        item, kids = self.item, self.kids
        parent = list(links.parent)
        add_item, add_parent, add_kids = item.append, parent.append, kids.append

        def link(p: int, c: int) -> None:
            parent[c] = p
            kids[p] = [*(kids[p] or ()), c]  # (a new list: the links' own stay as they are)

        # every container is named in ``ids`` or ``extra`` (or an unused one left by
        # ``remove``: a childless dummy, dropped below); their order is no input (the
        # threads are sorted by a key unique among them)
        roots = [c for c, p in enumerate(parent) if p < 0]

        def preorder(tops: list[int]) -> list[int]:
            out: list[int] = []
            stack = tops[::-1]
            while stack:
                c = stack.pop()
                out.append(c)
                ks = kids[c]
                if ks:
                    stack.extend(reversed(ks))
            return out

        key: list[int] = []  # each container's date rank as a sort key (below)
        done: set[int] = set()

        def date(c: int) -> int:
            k = key[c]
            if k >= 0 or c in done:
                return k
            ks = kids[c]
            k = key[c] = min(map(date, ks)) if ks else empty
            done.add(c)
            return k

        def dated() -> list[int]:
            """The sort keys: a message's own date rank (even numbers), a dummy's that of
            its earliest child (RFC 5256 §2.2 (4)), computed again for every dummy (their
            children change) and for the containers added since the last call."""
            if not key:
                key.extend(ckey)
            else:
                key.extend([-1] * (len(item) - len(key)))  # (only dummies were added)
                for d in dummies:
                    key[d] = -1
            done.clear()
            for d in dummies:
                date(d)
            return key

        # (3) drop empty dummies and promote their children: children before parents.
        # Only trees that hold a dummy change (the others' links are consistent already)
        dummies = [c for c, i in enumerate(item) if i < 0]
        if len(dummies) * 4 < len(item):
            tops = set()
            for d in dummies:
                walked = 0
                while parent[d] >= 0 and walked < _LOOP_LIMIT:
                    d = parent[d]
                    walked += 1
                tops.add(d)
            changing = [r for r in roots if r in tops]
        else:
            changing = roots
        promoted: dict[int, list[int]] = {}  # a dummy -> what stands in its place
        for c in reversed(preorder(changing)):
            ks = kids[c]
            if ks is not None and promoted:
                new: list[int] = []
                for k in ks:
                    stand_in = promoted.get(k)
                    if stand_in is None:
                        new.append(k)
                    else:
                        new.extend(stand_in)
                kids[c] = ks = new
            if ks:
                for k in ks:
                    parent[k] = c
            if item[c] < 0:
                if not ks:
                    promoted[c] = []
                elif parent[c] >= 0 or len(ks) == 1:
                    for k in ks:
                        parent[k] = -1
                    promoted[c] = ks
        top: list[int] = []
        for r in roots:
            stand_in = promoted.get(r)
            top.extend([r] if stand_in is None else stand_in)
        # (4) sort by date: a dummy's children now (its first one names its subject), the
        # rest once at the end
        by_date = dated().__getitem__
        for t in top:
            ks = kids[t]
            if item[t] < 0 and ks:
                ks.sort(key=by_date)
        top.sort(key=by_date)

        # (5) threads whose roots have the same base subject are gathered
        def subject(c: int) -> str:
            i = item[c]
            if i < 0:
                ks = kids[c]
                i = item[ks[0]] if ks else -1
            return subjects[i] if i >= 0 else ""

        def is_reply(c: int) -> bool:
            i = item[c]
            return i >= 0 and replies[i]

        table: dict[str, int] = {}
        for t in top:
            subj = subject(t)
            if not subj:
                continue
            old = table.get(subj)
            if old is None or (item[old] >= 0 and item[t] < 0) or (
                    is_reply(old) and not is_reply(t)):
                table[subj] = t
        result: list[int] = []
        position: dict[int, int] = {}  # container -> index in result
        for t in top:
            subj = subject(t)
            rep = table.get(subj, -1) if subj else -1
            if rep < 0 or rep == t:
                if t not in position:
                    position[t] = len(result)
                    result.append(t)
                continue
            if rep not in position:
                position[rep] = len(result)
                result.append(rep)
            if item[rep] < 0 and item[t] < 0:
                kids[rep] = (kids[rep] or []) + (kids[t] or [])
            elif item[rep] < 0 or (item[t] >= 0 and is_reply(t) and not is_reply(rep)):
                link(rep, t)
            else:
                dummy = len(parent)
                add_item(-1)
                add_parent(-1)
                add_kids([rep, t])
                dummies.append(dummy)
                at = position.pop(rep)
                result[at] = dummy
                position[dummy] = at
                table[subj] = dummy
        by_date = dated().__getitem__
        # every sibling list (also those of containers no longer in a thread: sorting
        # them changes nothing that is written)
        for ks in kids:
            if ks is not None and len(ks) > 1:
                ks.sort(key=by_date)
        result.sort(key=by_date)
        return result

    def threads(self) -> list[Thread]:
        """The answer as Thread tuples, built top down without recursion."""
        item, kids, numbers = self.item, self.kids, self.numbers
        out: list[Thread] = []
        stack: list[tuple[int, list[Thread]]] = [(c, out) for c in reversed(self.result)]
        while stack:
            c, into = stack.pop()
            i = item[c]
            sub: list[Thread] = []
            into.append((numbers[i] if i >= 0 else 0, sub))
            ks = kids[c]
            if ks:
                stack.extend([(k, sub) for k in reversed(ks)])
        return out

    def render(self) -> bytes:
        """What render_threads writes for ``threads()``: each thread in parentheses; a
        chain of only children flat, "(1 2 3)"; siblings each in parentheses after the
        chain, "(1 (2)(3))"; a dummy writes no number. Without recursion: a stack of
        containers to open and of closing parentheses. Sequence numbers of a whole
        view (1..n) are the row plus one: no lookup in ``numbers``, whose reads in
        thread order jump all over it (a third of the time for 100,000 messages)."""
        item, kids, numbers = self.item, self.kids, self.numbers
        seq = bool(numbers) and numbers[0] == 1 and numbers[-1] == len(numbers)  # (ascending)
        out: list[bytes] = [b"* THREAD "]
        push = out.append
        stack = self.result[::-1]  # containers to open; -1: a closing parenthesis
        while stack:
            c = stack.pop()
            if c < 0:
                push(b")")
                continue
            ks = kids[c]
            if not ks and item[c] >= 0:  # a message without replies (most of them)
                push(b"(%d)" % (item[c] + 1 if seq else numbers[item[c]]))
                continue
            push(b"(")
            wrote = False
            while True:
                i = item[c]
                if i >= 0:
                    label = i + 1 if seq else numbers[i]
                    push(b" %d" % label if wrote else b"%d" % label)
                    wrote = True
                ks = kids[c]
                if ks is not None and len(ks) == 1:
                    c = ks[0]
                    continue
                break
            stack.append(-1)
            if ks:
                if wrote:
                    push(b" ")
                stack.extend(reversed(ks))
        push(b"\r\n")
        return b"".join(out)


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
