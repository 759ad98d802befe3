"""A kept SORT order brought up to date for a new view (RFC 5256 §3), sans I/O.

A full sort of 100,000 messages (the store's ORDER BY over every row) costs more than the
answer; but a view not seen before usually differs from one already sorted by a few
arrivals and expunges. Expunged messages are dropped from the kept order (the order of a
subset is the order's restriction), and each arrival is inserted where a full sort would
put it: every key is a total order with the UID last (ties by sequence number, RFC 5256
§3, and a view's sequence numbers follow its UIDs), so that place is unique and a
bisection finds it. Only the keys of the messages the bisection visits are needed:
``Insertion`` asks for them in a few rounds (``FANOUT`` points of every open range at a
time), so the caller reads a few hundred keys from the store instead of every row.

Keys compare exactly as the store's ORDER BY does (``SORT_COLUMNS`` of the backends):
numbers as numbers, strings by code point (SQLite's BINARY collation on UTF-8, PostgreSQL's
COLLATE "C", Python's ``str``), REVERSE reversing one criterion only."""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pochta.mail.model import MessageMeta, SortKeys

# positions of an open range asked for per round: 100,000 rows take three rounds
FANOUT = 48
# at most about this many keys asked for per round (many arrivals: fewer per range)
ROUND_KEYS = 1024
# the criteria that need the kept keys (the others are the message's own metadata)
NEEDS_KEYS = {"DATE", "SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO"}

Key = tuple[Any, ...]
T = TypeVar("T")


class Reversed:
    """One criterion's value in reverse order (REVERSE, RFC 5256 §3) inside a key."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: Reversed) -> bool:
        return bool(other.v < self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reversed) and bool(self.v == other.v)

    def __hash__(self) -> int:
        return hash(self.v)


def value(name: str, meta: MessageMeta, keys: SortKeys | None) -> Any:
    """One criterion's value, as the store's SORT_COLUMNS computes it."""
    if name == "ARRIVAL":
        return meta.internaldate
    if name == "SIZE":
        return meta.size
    assert keys is not None
    if name == "DATE":  # the sent date, else the internal date (RFC 5256 §2.2)
        return keys.date if keys.date is not None else meta.internaldate
    if name == "SUBJECT":
        return keys.subject
    if name == "FROM":
        return keys.from_
    if name == "TO":
        return keys.to
    if name == "CC":
        return keys.cc
    if name == "DISPLAYFROM":
        return keys.display_from
    if name == "DISPLAYTO":
        return keys.display_to
    raise ValueError(name)


def sort_key(criteria: Sequence[tuple[str, bool]], meta: MessageMeta,
             keys: SortKeys | None) -> Key:
    """The message's full key: every criterion, then its UID (unique in the mailbox)."""
    parts: list[Any] = []
    for name, rev in criteria:
        v = value(name, meta, keys)
        parts.append(Reversed(v) if rev else v)
    parts.append(meta.uid)
    return tuple(parts)


def needs_keys(criteria: Sequence[tuple[str, bool]]) -> bool:
    return any(name in NEEDS_KEYS for name, _ in criteria)


def criteria_name(criteria: Sequence[tuple[str, bool]]) -> str:
    """The criteria as SORT writes them ("REVERSE ARRIVAL", "SUBJECT REVERSE DATE")."""
    return " ".join(("REVERSE " if rev else "") + name for name, rev in criteria)


def kept_part(order: Sequence[int], view: Any) -> list[int]:
    """The kept order's UIDs that are in the view (``view``: anything with ``in``)."""
    return list(filter(view.__contains__, order))  # (no Python code per UID)


class Insertion:
    """Where arrivals go in an order (of UIDs, sorted by the full keys): the caller asks
    ``wanted()`` for the UIDs whose keys the searches need next, gives them to ``feed``,
    and repeats until ``wanted()`` is empty; then ``result()`` is the merged order, as a
    full sort would give it."""

    def __init__(self, order: list[int], arrivals: list[tuple[Key, int]],
                 known: dict[int, Key] | None = None) -> None:
        self.order = order
        # distinct UIDs and so distinct keys: a key's place is unique
        self.arrivals = sorted(arrivals)
        self.keys: dict[int, Key] = dict(known or {})
        n = len(order)
        self.ranges = [[0, n] for _ in self.arrivals]
        self.fanout = max(2, min(FANOUT, ROUND_KEYS // max(1, len(arrivals))))

    def _narrow(self, i: int) -> list[int]:
        """Narrow arrival i's range with the known keys; the positions still wanted."""
        key = self.arrivals[i][0]
        rng = self.ranges[i]
        lo, hi = rng
        order, keys = self.order, self.keys
        while lo < hi:
            if hi - lo > self.fanout:
                step = (hi - lo) / self.fanout
                picks = sorted({lo + int(step * j) for j in range(self.fanout)} | {hi - 1})
                missing = [p for p in picks if order[p] not in keys]
                if missing:
                    rng[0], rng[1] = lo, hi
                    return missing
                # every pick known: cut the range to the slot between two picks
                j = bisect.bisect_left([keys[order[p]] for p in picks], key)
                new_lo = picks[j - 1] + 1 if j else lo
                new_hi = picks[j] if j < len(picks) else hi
                lo, hi = new_lo, new_hi
                continue
            missing = [p for p in range(lo, hi) if order[p] not in keys]
            if missing:
                rng[0], rng[1] = lo, hi
                return missing
            lo += bisect.bisect_left([keys[order[p]] for p in range(lo, hi)], key)
            hi = lo
        rng[0], rng[1] = lo, lo
        return []

    def wanted(self) -> list[int]:
        """The UIDs of the order whose keys are needed next (none: every place found)."""
        want: dict[int, None] = {}
        for i in range(len(self.arrivals)):
            for p in self._narrow(i):
                want[self.order[p]] = None
        return list(want)

    def feed(self, keys: dict[int, Key]) -> None:
        self.keys.update(keys)

    def merged(self, values: list[T], new: Mapping[int, T]) -> list[T]:
        """``values`` (one per UID of the order, in its order) with the arrivals' values
        (``new``, by UID) in the arrivals' places."""
        if self.wanted():
            raise RuntimeError("Insertion.merged before every place was found")
        out: list[T] = []
        prev = 0
        # arrivals are in key order, and so are their places (equal places: key order)
        for (_, uid), (pos, _) in zip(self.arrivals, self.ranges, strict=True):
            out.extend(values[prev:pos])
            out.append(new[uid])
            prev = pos
        out.extend(values[prev:])
        return out

    def result(self) -> list[int]:
        """The order with the arrivals in their places, as a full sort would give it."""
        return self.merged(self.order, {u: u for _, u in self.arrivals})


def expunged(covers: list[int], view: list[int], limit: int) -> list[int] | None:
    """At most ``limit`` UIDs to drop from ``covers`` (a view sorted before, ascending)
    so that ``view`` (ascending) is the rest followed by UIDs above them all: found by
    bisection (a few comparisons per UID, not a pass over 100,000) and checked by one
    list comparison; None when there are none such. Every UID ``view`` lacks is dropped;
    one it still has may be too (a view that gained a UID below some of ``covers``):
    the caller inserts the UIDs that follow the rest as arrivals, so it comes back."""
    gone: list[int] = []
    i = 0
    while True:
        d = len(gone)
        m = min(len(view), len(covers) - d)
        # the first j >= i where view[j] != covers[j + d] (equal before it)
        lo, hi = i, m
        while lo < hi:
            mid = (lo + hi) // 2
            if view[mid] == covers[mid + d]:
                lo = mid + 1
            else:
                hi = mid
        if lo == m:
            gone += covers[m + d:]  # (none, or the last ones when the view ends first)
            break
        gone.append(covers[lo + d])
        if len(gone) > limit:
            return None
        i = lo
    if len(gone) > limit:
        return None
    rest = covers[:] if gone else covers
    for g in reversed(gone):  # (gone is ascending: positions stay right)
        del rest[bisect.bisect_left(rest, g)]
    return gone if view[: len(rest)] == rest else None


def expunged_any(covers: list[int], view: list[int]) -> list[int] | None:
    """``expunged`` without a limit, by set operations (in C, but over every UID): the
    UIDs of ``covers`` that ``view`` lacks, ascending, if ``view`` is the rest followed
    by UIDs above them all, else None."""
    gone = set(covers).difference(view)
    rest = list(itertools.filterfalse(gone.__contains__, covers)) if gone else covers
    return sorted(gone) if view[: len(rest)] == rest else None


def without_expunged(order: list[int], nums: list[int] | None, covers: list[int],
                     gone: list[int]) -> tuple[list[int], list[int] | None]:
    """The kept order (and its sequence numbers in the view ``covers``) without the
    ``gone`` UIDs of ``covers``, the numbers after k of them lowered by k (RFC 9051
    §7.5.1). Each is one pass in C: a table of the new number of every old one, read
    by ``itemgetter`` (100,000 bisections in a ``map`` cost 4-5 times as much)."""
    if not gone:
        return order, nums
    out = list(itertools.filterfalse(set(gone).__contains__, order))
    if nums is None:
        return out, None
    ps = sorted(bisect.bisect_left(covers, g) + 1 for g in gone)  # their old numbers
    table = list(range(ps[0]))  # table[old number] = new number (0: gone)
    for k, p in enumerate(ps, 1):
        table.append(0)
        table.extend(range(p + 1 - k, (ps[k] if k < len(ps) else len(covers) + 1) - k))
    new = [table[nums[0]]] if len(nums) == 1 else list(operator.itemgetter(*nums)(table))
    return out, list(filter(None, new))
