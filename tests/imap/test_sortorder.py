"""A kept SORT order brought up to date (proto/imap/sortorder.py) must equal a full sort of
the new view, whatever arrives and goes: random mailboxes full of ties (equal dates,
subjects, addresses, sizes; missing dates; non-ASCII and astral characters, which must
compare by code point), random criteria with REVERSE, random arrivals (also below the
highest UID) and expunges, in rounds; and the keys order as the server's own sort
(``sort_items``) does."""

from __future__ import annotations

import random

import pytest

from pochta.mail.model import MessageMeta, SortKeys
from pochta.proto.imap import sortorder
from pochta.proto.imap.sort import SORT_KEYS, SortItem, sort_items
from pochta.proto.imap.sortorder import (
    Insertion,
    criteria_name,
    expunged,
    expunged_any,
    kept_part,
    sort_key,
)

STRINGS = ["", "A", "AB", "B", "a", "É", "É", "E\u0301", "\U0001f600", "\uffff", "Z", "ÿ"]


def message(rng: random.Random, uid: int) -> tuple[MessageMeta, SortKeys]:
    def s() -> str:
        return "".join(rng.choice(STRINGS) for _ in range(rng.randint(0, 2)))

    meta = MessageMeta(uid, 1000 + uid, rng.choice([10, 20, 30, 40]),
                       float(rng.choice([0, 100, 100.5, 200])), frozenset(), 1)
    keys = SortKeys(rng.choice([None, 50.0, 100.0, 150.0, 100.5]), s(), False, s(), s(), s(),
                    s(), s(), "", "")
    return meta, keys


def full(criteria: list[tuple[str, bool]], box: dict[int, tuple[MessageMeta, SortKeys]],
         view: list[int]) -> list[int]:
    return sorted(view, key=lambda u: sort_key(criteria, *box[u]))


def criteria(rng: random.Random) -> list[tuple[str, bool]]:
    names = rng.sample(sorted(SORT_KEYS), rng.randint(1, 3))
    return [(n, rng.random() < 0.5) for n in names]


def test_keys_order_as_the_servers_own_sort() -> None:
    rng = random.Random(5256)
    for _ in range(200):
        box = {u: message(rng, u) for u in range(1, rng.randint(1, 40))}
        crit = criteria(rng)
        view = sorted(box)
        items = [SortItem(n, box[u][0], box[u][1]) for n, u in enumerate(view, 1)]
        assert [it.meta.uid for it in sort_items(items, crit)] == full(crit, box, view)


@pytest.mark.parametrize("fanout", [2, 3, 48])
def test_incremental_order_equals_a_full_sort(fanout: int, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setattr(sortorder, "FANOUT", fanout)
    rng = random.Random(fanout)
    checked = 0
    for _ in range(60):
        crit = criteria(rng)
        box = {u: message(rng, u) for u in range(1, rng.randint(0, 80))}
        view = sorted(box)
        order = full(crit, box, view)
        top = len(box)
        for _ in range(8):
            # expunges, and arrivals: mostly new UIDs, sometimes earlier ones the kept
            # order lacks (a view that was behind)
            gone = set(rng.sample(view, rng.randint(0, min(len(view), 6))))
            view = [u for u in view if u not in gone]
            new = []
            for _ in range(rng.randint(0, 12)):
                top += 1
                box[top] = message(rng, top)
                new.append(top)
            missing = [u for u in view if rng.random() < 0.05]
            view = sorted(set(view) | set(new))
            kept = [u for u in order if u not in missing]
            inview = set(view)
            base = kept_part(kept, inview)
            arrivals = sorted(inview - set(base))
            visited: list[int] = []
            ins = Insertion(base, [(sort_key(crit, *box[u]), u) for u in arrivals])
            while want := ins.wanted():
                visited += want
                ins.feed({u: sort_key(crit, *box[u]) for u in want})
            order = ins.result()
            assert order == full(crit, box, view), criteria_name(crit)
            assert set(visited) <= set(base)
            checked += 1
    assert checked == 480


def test_few_keys_are_read() -> None:
    """One arrival into 100,000 sorted rows reads a few rounds of keys, not every row."""
    order = list(range(1, 100_001))
    keys = {u: (u * 2, u) for u in order}
    ins = Insertion(order, [((777, 200_001), 200_001)])
    rounds = read = 0
    while want := ins.wanted():
        rounds += 1
        read += len(want)
        ins.feed({u: keys[u] for u in want})
    assert ins.result().index(200_001) == 388  # after (776, 388), before (778, 389)
    assert rounds <= 3 and read <= 3 * (sortorder.FANOUT + 1)


def test_expunged_found_by_bisection() -> None:
    """``expunged`` finds what to drop from a sorted view so that a later one is the rest
    plus UIDs above it: every UID gone (up to the limit), whatever arrived after, and
    None (never a wrong answer) when the view also gained a UID below the old ones."""
    rng = random.Random(4)
    found = 0
    for _ in range(20_000):
        covers = sorted(rng.sample(range(1, 60), rng.randint(0, 30)))
        gone = set(rng.sample(covers, rng.randint(0, min(len(covers), 5))))
        view = [u for u in covers if u not in gone]
        top = covers[-1] if covers else 0
        filled = False
        if rng.random() < 0.5:
            view += list(range(top + 1, top + 1 + rng.randint(0, 3)))
        elif holes := [u for u in range(1, top) if u not in covers]:
            view = sorted({*view, rng.choice(holes)})
            filled = True
        every = expunged_any(covers, view)
        if not filled:
            assert every == sorted(gone)
        elif every is not None:  # (a filled hole above every UID gone: still the rest)
            rest = [u for u in covers if u not in set(every)]
            assert view[: len(rest)] == rest and set(covers) - set(view) == set(every)
        got = expunged(covers, view, 3)
        if got is None:
            assert len(gone) > 3 or filled
            continue
        found += 1
        rest = [u for u in covers if u not in set(got)]
        assert gone <= set(got) and len(got) <= 3
        assert view[: len(rest)] == rest
        assert all(u > (rest[-1] if rest else 0) for u in view[len(rest):])
    assert found > 8_000


def test_without_expunged_drops_and_renumbers() -> None:
    """The kept order less the expunged UIDs, and each sequence number after k expunged
    ones lowered by k (RFC 9051 §7.5.1): equal to numbering the rest of the view again,
    on random views, orders and expunges (none, one, the first, the last, many)."""
    rng = random.Random(9051)
    for _ in range(300):
        covers = sorted(rng.sample(range(1, 400), rng.randint(1, 60)))
        order = covers[:]
        rng.shuffle(order)
        seq = {u: i + 1 for i, u in enumerate(covers)}
        nums = [seq[u] for u in order]
        gone = sorted(rng.sample(covers, rng.choice((0, 1, 1, 2, len(covers) // 2,
                                                     len(covers)))))
        out, renumbered = sortorder.without_expunged(order, nums, covers, gone)
        rest = [u for u in covers if u not in gone]
        assert out == [u for u in order if u not in gone]
        new_seq = {u: i + 1 for i, u in enumerate(rest)}
        assert renumbered == [new_seq[u] for u in out], (covers, gone)
        assert sortorder.without_expunged(order, None, covers, gone) == (out, None)
