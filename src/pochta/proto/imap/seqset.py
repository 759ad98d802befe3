"""Sequence sets (RFC 9051 §9 ``sequence-set``), ``*`` and the saved result ``$`` (RFC 5182)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import ParseError, Reader

STAR = -1


@dataclass(frozen=True, slots=True)
class SeqSet:
    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False  # "$": the result saved by SEARCH RETURN (SAVE)

    def seqs(self, count: int) -> list[int]:
        """Message sequence numbers in 1..count; a number beyond count is an error."""
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = count if lo == STAR else lo
            b = count if hi == STAR else hi
            a, b = min(a, b), max(a, b)
            if b > count or a < 1:
                raise ParseError("invalid message sequence number")
            out.update(range(a, b + 1))
        return sorted(out)

    def uids(self, uids: Sequence[int]) -> list[int]:
        """The mailbox's uids (ascending) that fall in the set; ``*`` is the highest uid."""
        if not uids:
            return []
        top = uids[-1]
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = top if lo == STAR else lo
            b = top if hi == STAR else hi
            a, b = min(a, b), max(a, b)
            i = bisect.bisect_left(uids, a)
            j = bisect.bisect_right(uids, b)
            out.update(uids[i:j])
        return sorted(out)

    def contains_uid(self, uid: int, top: int) -> bool:
        for lo, hi in self.ranges:
            a = top if lo == STAR else lo
            b = top if hi == STAR else hi
            if min(a, b) <= uid <= max(a, b):
                return True
        return False


def _seq_number(r: Reader) -> int:
    if r.accept("*"):
        return STAR
    return r.number(nonzero=True)


def parse_seqset(r: Reader) -> SeqSet:
    if r.accept("$"):
        return SeqSet(saved=True)
    ranges: list[tuple[int, int]] = []
    while True:
        lo = _seq_number(r)
        hi = _seq_number(r) if r.accept(":") else lo
        ranges.append((lo, hi))
        if not r.accept(","):
            return SeqSet(tuple(ranges))


def parse_seqset_text(text: str) -> SeqSet:
    r = Reader(RawCommand((text.encode(),), ()))
    s = parse_seqset(r)
    r.end()
    return s
