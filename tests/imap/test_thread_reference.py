"""The threading functions against the implementation they replaced (kept below as the
reference, verbatim): identical threads and identical rendered bytes on random mailboxes
with loops in References, duplicate and missing Message-IDs, reply/forward/tagged
subjects and equal dates (RFC 5256 §2.4, §2.5)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from pochta.mail.model import MessageMeta, SortKeys
from pochta.proto.imap import sort as sort_module
from pochta.proto.imap.sort import (
    SortItem,
    Thread,
    ThreadInput,
    ThreadLinks,
    base_subject,
    orderedsubject_answer,
    references_answer,
    render_threads,
    sort_items,
    thread_orderedsubject,
    thread_references,
)

# --- the reference: the implementation before the faster one (pochta 8080b9f) ---------


def old_thread_orderedsubject(items: list[SortItem]) -> list[Thread]:
    """RFC 5256 §2.4 (ORDEREDSUBJECT): group by base subject, sort each group by sent
    date; the first is the parent, the others its children; groups by their first date."""
    groups: dict[str, list[SortItem]] = {}
    for it in sort_items(items, [("SUBJECT", False), ("DATE", False)]):
        groups.setdefault(str(it.key("SUBJECT")), []).append(it)
    threads = [g for g in groups.values()]
    threads.sort(key=lambda g: (float(g[0].key("DATE")), g[0].seq))  # type: ignore[arg-type]
    return [(g[0].seq, [(x.seq, []) for x in g[1:]]) for g in threads]


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


def old_thread_references(items: list[SortItem]) -> list[Thread]:
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


# --- the comparison ---------------------------------------------------------------------

SUBJECTS = ("hello", "Re: hello", "Fwd: hello", "[list] Re: hello", "RE[2]: hello (fwd)",
            "[fwd: hello]", "other", "Re: other", "[tag]", "", "  ", "Re:", "third thing")


def mailbox(rng: random.Random) -> list[SortItem]:
    n = rng.randrange(0, 40)
    pool = [f"<{i}@x>" for i in range(rng.randrange(1, n + 2))]
    dates: list[float | None] = [None, 1000.0, 1000.0, 2000.0] + [
        float(rng.randrange(0, 5000)) for _ in range(3)]
    seqs = list(range(1, n + 1))
    rng.shuffle(seqs)
    out = []
    for seq in seqs:
        subject, reply = base_subject(rng.choice(SUBJECTS))
        mid = rng.choice(pool) if rng.random() < 0.85 else ""
        refs = rng.sample(pool, rng.randrange(0, min(len(pool), 5) + 1))
        if rng.random() < 0.2 and mid:
            refs.append(mid)  # a message that references itself
        keys = SortKeys(date=rng.choice(dates), subject=subject, reply=reply, from_="",
                        to="", cc="", display_from="", display_to="", message_id=mid,
                        references=" ".join(refs))
        meta = MessageMeta(seq, seq, 100, float(rng.choice((500, 1000, 3000))),
                           frozenset(), 1)
        out.append(SortItem(seq, meta, keys))
    if rng.random() < 0.5:
        out.sort(key=lambda it: it.seq)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_same_threads_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        items = mailbox(rng)
        for new, old in ((thread_references, old_thread_references),
                         (thread_orderedsubject, old_thread_orderedsubject)):
            got, want = new(items), old(items)
            assert got == want, (new.__name__, items)
            assert render_threads(got) == render_threads(want)
        # THREAD ... ALL's path: columns in, bytes out (no Thread tuples)
        assert references_answer(ThreadInput.of_items(items)) == render_threads(
            old_thread_references(items)), items
        assert orderedsubject_answer(ThreadInput.of_items(items)) == render_threads(
            old_thread_orderedsubject(items)), items


def test_sortbox_mailbox_same_as_the_reference() -> None:
    """bench/imap_sortbox.py's shape: chains of five, dates out of arrival order."""
    items = []
    for i in range(3000):
        root = i - i % 5
        keys = SortKeys(date=float(((i * 7919) % 3000) * 60), subject=f"TOPIC {root % 211}",
                        reply=bool(i % 5), from_="", to="", cc="", display_from="",
                        display_to="", message_id=f"<{i}@bench>",
                        references=f"<{root}@bench>" if i % 5 else "")
        items.append(SortItem(i + 1, MessageMeta(i + 1, i + 1, 1, float(i), frozenset(), 1),
                              keys))
    assert render_threads(thread_references(items)) == render_threads(
        old_thread_references(items))
    assert references_answer(ThreadInput.of_items(items)) == render_threads(
        old_thread_references(items))
    assert thread_orderedsubject(items) == old_thread_orderedsubject(items)
    assert orderedsubject_answer(ThreadInput.of_items(items)) == render_threads(
        old_thread_orderedsubject(items))


def test_deep_reference_chain_is_not_recursive() -> None:
    """A chain deeper than Python's recursion limit (the reference would fail here)."""
    items = []
    for i in range(1, 5001):
        keys = SortKeys(date=float(i), subject="S", reply=i > 1, from_="", to="", cc="",
                        display_from="", display_to="", message_id=f"<{i}@d>",
                        references=" ".join(f"<{j}@d>" for j in range(max(1, i - 3), i)))
        items.append(SortItem(i, MessageMeta(i, i, 1, 0.0, frozenset(), 1), keys))
    want = b"* THREAD (" + b" ".join(b"%d" % i for i in range(1, 5001)) + b")\r\n"
    assert render_threads(thread_references(items)) == want
    assert references_answer(ThreadInput.of_items(items)) == want


# --- incremental REFERENCES: arrivals linked into kept links ---------------------------


def _rows(m: ThreadInput, n: int) -> ThreadInput:
    """The first n rows (a mailbox before its later arrivals)."""
    return ThreadInput(m.numbers[:n], m.dates[:n], m.subjects[:n], m.replies[:n],
                       m.message_ids[:n], m.references[:n])


def _arrivals_mailbox(rng: random.Random, unique: bool) -> ThreadInput:
    """Messages in arrival (UID) order with dates in any order. ``unique``: mostly new
    Message-IDs and a single reference each (where arrivals can be linked in);
    otherwise the small pools of ``mailbox`` (duplicates, loops, several references)."""
    if not unique:
        return ThreadInput.of_items(mailbox(rng))
    n = rng.randrange(1, 60)
    ids: list[str] = []
    dates = [float(rng.randrange(0, 50)) for _ in range(n)]
    if rng.random() < 0.3:
        dates.sort()  # mail arriving newest last
    mids, refs, subjects, replies = [], [], [], []
    for i in range(n):
        mid = f"<{i}@u>" if rng.random() < 0.9 else rng.choice([*ids, ""] if ids else [""])
        known = ids + [f"<gone{k}@u>" for k in range(3)]
        if rng.random() < 0.2:
            ref = " ".join(rng.sample(known, min(len(known), rng.randrange(2, 4))))
        elif rng.random() < 0.7:
            ref = rng.choice(known)
        else:
            ref = ""
        if mid:
            ids.append(mid)
        subject, reply = base_subject(rng.choice(SUBJECTS))
        mids.append(mid)
        refs.append(ref)
        subjects.append(subject)
        replies.append(reply)
    return ThreadInput(list(range(1, n + 1)), dates, subjects, replies, mids, refs)


@pytest.mark.parametrize("seed", range(20))
def test_arrivals_linked_in_answer_as_a_full_pass(seed: int, monkeypatch: Any) -> None:
    """Links kept across random arrival sequences (one or several messages at a time,
    dated before or after the others) answer exactly as threading every message again
    does, whenever ``extend`` accepts the arrivals; and it accepts most of them when
    they name new Message-IDs. (Odd seeds: the date ranks made again after every
    arrival dated among the others, instead of moved one by one.)"""
    if seed % 2:
        monkeypatch.setattr(sort_module, "_FEW_INSERTS", 0)
    rng = random.Random(seed)
    accepted = refused = 0
    for round_ in range(60):
        m = _arrivals_mailbox(rng, unique=round_ % 3 != 0)
        n = len(m.numbers)
        at = rng.randrange(0, n + 1)
        links = ThreadLinks(_rows(m, at))
        while at < n:
            at = min(n, at + rng.choice((1, 1, 1, 2, 5)))
            part = _rows(m, at)
            if links.extend(part):
                accepted += 1
            else:
                refused += 1
                links = ThreadLinks(part)  # what the server does: link all again
            want = references_answer(part)
            assert links.answer(part) == want, (seed, at, part)
            assert links.answer(part) == want  # answering leaves the links as they were
    assert accepted > refused > 0


def test_out_of_order_arrival_linked_in() -> None:
    """bench/imap_sortbox.py's arrivals: a new Message-ID replying to one thread root,
    dated in the middle of the mailbox."""
    items = []
    for i in range(500):
        root = i - i % 5
        keys = SortKeys(date=float(((i * 7919) % 500) * 60), subject=f"TOPIC {root % 37}",
                        reply=bool(i % 5), from_="", to="", cc="", display_from="",
                        display_to="", message_id=f"<{i}@bench>",
                        references=f"<{root}@bench>" if i % 5 else "")
        items.append(SortItem(i + 1, MessageMeta(i + 1, i + 1, 1, float(i), frozenset(), 1),
                              keys))
    m = ThreadInput.of_items(items)
    links = ThreadLinks(_rows(m, 400))
    for n in range(401, 501):
        assert links.extend(_rows(m, n))
    assert links.answer(m) == render_threads(old_thread_references(items))


def test_refused_arrivals() -> None:
    """Out of date order, an arrival whose Message-ID is known already, or that names
    several messages, is not linked in (the caller threads everything again)."""
    def box(mids: list[str], refs: list[str], dates: list[float]) -> ThreadInput:
        n = len(mids)
        return ThreadInput(list(range(1, n + 1)), dates, ["S"] * n, [False] * n, mids, refs)

    base = box(["<a>", "<b>"], ["", "<zz>"], [10.0, 20.0])
    for mid, refs, date, ok in (("<c>", "<a> <b>", 30.0, True),  # dated last: any shape
                                ("<c>", "<a>", 5.0, True),
                                ("<zz>", "<a>", 5.0, False),  # named already
                                ("<c>", "<a> <b>", 5.0, False),
                                ("<c>", "<c>", 5.0, False)):
        m = box(["<a>", "<b>", mid], ["", "<zz>", refs], [10.0, 20.0, date])
        links = ThreadLinks(base)
        assert links.extend(m) is ok, (mid, refs, date)
        if ok:
            assert links.answer(m) == references_answer(m)


# --- incremental REFERENCES: expunges taken out of kept links ---------------------------


def _pick(m: ThreadInput, rows: list[int]) -> ThreadInput:
    """These rows of m (ascending): a mailbox after expunges, numbers kept."""
    return ThreadInput([m.numbers[i] for i in rows], [m.dates[i] for i in rows],
                       [m.subjects[i] for i in rows], [m.replies[i] for i in rows],
                       [m.message_ids[i] for i in rows], [m.references[i] for i in rows])


def _expunge_and_arrive(seed: int, rounds: int) -> tuple[int, int]:
    """Links kept across random sequences of arrivals and expunges (one to three rows
    at a time, sometimes both before one THREAD, sometimes restored from ``pack``):
    every answer equals threading every row again. (taken out, refused)."""
    rng = random.Random(seed)
    removed = refused = 0
    for round_ in range(rounds):
        full = _arrivals_mailbox(rng, unique=round_ % 3 != 0)
        n = len(full.numbers)
        at = rng.randrange(0, n + 1)
        present = list(range(at))
        cur = _pick(full, present)
        links: ThreadLinks | None = ThreadLinks(cur)
        for _ in range(12):
            if rng.random() < 0.3:  # a restart: the links from a snapshot
                assert links is not None
                packed = links.pack()
                assert packed is not None
                links = ThreadLinks.unpack(cur, packed)
                assert links is not None
            gone: list[int] = []
            if present and rng.random() < 0.6:
                gone = sorted(rng.sample(range(len(present)), min(len(present),
                                                                   rng.choice((1, 1, 2, 3)))))
            came = 0
            if at < n and (not gone or rng.random() < 0.4):
                came = min(n - at, rng.choice((1, 1, 2)))
            before = cur
            present = [p for j, p in enumerate(present) if j not in gone]
            present += list(range(at, at + came))
            at += came
            cur = _pick(full, present)
            assert links is not None
            if gone:
                if links.remove(gone, [before.message_ids[g] for g in gone],
                                [before.references[g] for g in gone], cur):
                    removed += 1
                else:
                    refused += 1
                    links = None
            if links is None or not links.extend(cur):
                links = ThreadLinks(cur)
            want = references_answer(cur)
            assert links.answer(cur) == want, (seed, round_, present)
    return removed, refused


@pytest.mark.parametrize("seed", range(20))
def test_expunges_taken_out_answer_as_a_full_pass(seed: int, monkeypatch: Any) -> None:
    """RFC 5256 §2.5 (1) without the expunged rows, incrementally (``ThreadLinks.remove``):
    a leaf whose Message-ID no other row names, naming at most one message, is taken
    out; the answers equal a full pass after every step, and both outcomes occur. (Odd
    seeds: unpacked links look every Message-ID up in one pass over their keys.)"""
    if seed % 2:
        monkeypatch.setattr(sort_module, "_FEW_LOOKUPS", 0)
    removed, refused = _expunge_and_arrive(seed, 60)
    assert removed > 0 and refused > 0


def test_expunge_rule() -> None:
    """Which expunges are taken out: a reply naming one message is, and so is a
    thread's first message (naming none) that others name first in their References
    (it becomes a dummy); a reply that another names, one naming several, one whose
    Message-ID another row carries, or a first message named after another reference
    is not. A dummy only the expunged reply named goes with it."""
    def box(mids: list[str], refs: list[str]) -> ThreadInput:
        n = len(mids)
        return ThreadInput(list(range(1, n + 1)), [float(i) for i in range(n)], ["S"] * n,
                           [False] * n, mids, refs)

    for mids, refs, gone, ok in (
            (["<a>", "<b>"], ["", "<a>"], 1, True),
            (["<a>", "<b>"], ["", "<a>"], 0, True),  # a first message: <a> a dummy
            (["<a>", "<b>", "<c>"], ["", "<a>", "<a> <b>"], 0, True),
            (["<a>", "<b>", "<c>"], ["<zz>", "<a>", "<a>"], 0, False),  # names <zz>
            (["<a>", "<b>", "<c>"], ["", "<a>", "<zz> <a>"], 0, False),  # after <zz>
            (["<a>", "<b>", "<a>"], ["", "<a>", ""], 0, False),  # its twin would fill it
            (["<a>", "<b>", "<c>"], ["", "<a>", "<b>"], 1, False),  # a reply <c> names
            (["<a>", "<b>", "<c>"], ["", "<a>", "<zz> <a>"], 2, False),  # several
            (["<a>", "<b>", "<b>"], ["", "<a>", "<a>"], 1, False),  # its twin would own <b>
            (["<a>", "<b>", "<b>"], ["", "<a>", "<a>"], 2, True),  # the twin itself
            (["<a>", "<b>"], ["", "<zz>"], 1, True),  # and the dummy <zz> goes too
            (["<a>", ""], ["", "<a>"], 1, True)):
        m = box(mids, refs)
        rest = [i for i in range(len(mids)) if i != gone]
        links = ThreadLinks(m)
        after = _pick(m, rest)
        assert links.remove([gone], [mids[gone]], [refs[gone]], after) is ok, (mids, refs)
        if ok:
            assert links.answer(after) == references_answer(after)
            assert links.ids is not None and "<zz>" not in links.ids
