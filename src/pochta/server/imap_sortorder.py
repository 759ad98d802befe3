"""SORT ... ALL of a view not seen before without sorting every message again: the UID
order of the last view sorted is kept per mailbox and criteria (``SortOrders``, one per
process, with that view's UIDs and, once a SORT asked for them, the sequence numbers),
and a new view drops the messages expunged since and inserts the arrivals where a full
sort would put them (proto/imap/sortorder.py), their keys and those of the messages the
bisection visits read from the store (a few hundred rows, not 100,000). A few expunged
messages are found by bisection of the two views and the sequence numbers shifted in C,
so a new view costs no pass of Python code over every message (RFC 5256 §3; the kept
order must be exactly the store's: tests/storage/test_imap_state.py, tests/imap/).

The first SORT of a mailbox after a restart starts from a snapshot of the order kept in
the store (``SortSnapshot``: the UIDs in order, their sequence numbers and the view's
UIDs, 8-9 octets per message), which it brings up to date the same way; the snapshot
is written again once it misses ``EVERY`` rows.

Exact because a UID of a mailbox with its UIDVALIDITY always names the same message, whose
keys never change: the kept order of any set of messages, restricted to the ones still
there, is their order; and ``Insertion`` compares keys as the store's ORDER BY does."""

from __future__ import annotations

import bisect
import logging
import operator
import struct
import sys
import zlib
from array import array
from collections.abc import Awaitable, Callable, Sequence

from ..proto.imap.sort import collector_paused
from ..proto.imap.sortorder import (
    Insertion,
    Key,
    criteria_name,
    expunged,
    expunged_any,
    kept_part,
    needs_keys,
    sort_key,
    without_expunged,
)
from ..storage.interfaces import MailboxInfo, MessageMeta, StoreError
from ..storage.interfaces_imap import SORT_SNAPSHOT_MAX, SORT_SNAPSHOTS, SortKeys, SortSnapshot
from .imap_session import ImapSession
from .imap_sortcache import SortBox, SortOrder

log = logging.getLogger("pochta.imap")

# more arrivals than this since the kept order: the store sorts everything again
MAX_ARRIVALS = 2000
# at most this many expunged since the kept order are found by bisection (more: set
# operations over every UID, in C: 10-15 ms for 100,000)
GONE_FOUND = 64
# a mailbox this small is sorted by the store quickly enough: no snapshot
MIN_ROWS = 1000
# a new snapshot once the kept one misses this many of the view's rows (writing one
# costs ~15 ms; after a restart each row missed costs a few keys read and compared)
EVERY = 100
# "U3", the number n of UIDs and a CRC-32 of the rest (little-endian 32-bit numbers), the
# n UIDs in order, their sequence numbers in the view sorted, then that view's UIDs
# (ascending), zlib-compressed
FORMAT = b"U3"
HEAD = struct.Struct("<2sII")


def _le(a: array[int]) -> bytes:
    if sys.byteorder == "big":
        a = array("I", a)
        a.byteswap()
    return a.tobytes()


def encode(uids: Sequence[int], nums: Sequence[int], covers: Sequence[int]) -> bytes:
    body = (_le(array("I", uids)) + _le(array("I", nums))
            + zlib.compress(_le(array("I", covers)), 1))
    return HEAD.pack(FORMAT, len(uids), zlib.crc32(body)) + body


def decode(data: bytes) -> SortOrder | None:
    """The order, its sequence numbers and the view it is of; None when the data is not
    such a snapshot (another format, damaged, or the lists disagree)."""
    if len(data) < HEAD.size:
        return None
    fmt, n, crc = HEAD.unpack_from(data)
    body = memoryview(data)[HEAD.size:]
    if fmt != FORMAT or len(body) < 8 * n or zlib.crc32(body) != crc:
        return None
    try:
        raw = zlib.decompress(body[8 * n:])
    except zlib.error:
        return None
    order, nums, ascending = array("I"), array("I"), array("I")
    order.frombytes(body[: 4 * n])
    nums.frombytes(body[4 * n : 8 * n])
    ascending.frombytes(raw)
    if sys.byteorder == "big":
        for a in (order, nums, ascending):
            a.byteswap()
    covers = ascending.tolist()
    # (the CRC finds damage; cheap checks that the three agree: sizes, the UIDs' sums,
    # distinct UIDs ascending, and every 97th number naming its UID. Each pass over an
    # array costs 1.5-2 ms for 100,000: no more of them on this first SORT's path)
    if (len(covers) != n or not covers or covers[0] < 1 or sum(order) != sum(covers)
            or not all(map(operator.lt, covers, covers[1:]))
            or any(not 0 < nums[i] <= n or covers[nums[i] - 1] != order[i]
                   for i in range(0, n, 97))):
        return None
    return SortOrder(order, covers[-1], covers, nums)


def numbers(view: list[int], uids: list[int]) -> list[int]:
    """The sequence numbers of these UIDs of the view."""
    if view[-1] == len(view):  # UIDs 1..n: each is its sequence number
        return list(uids)
    seq = dict(zip(view, range(1, len(view) + 1), strict=True))  # (built in C)
    return list(map(seq.__getitem__, uids))


async def _load(s: ImapSession, info: MailboxInfo, name: str, box: SortBox) -> SortOrder | None:
    """The criteria's snapshot from the store, if it is of this UIDVALIDITY and decodes."""
    try:
        snap = await s.store.get_sort_snapshot(info.id, name)
    except StoreError:
        return None
    if len(box.snapshots) >= 4 * SORT_SNAPSHOTS:  # (bounded: a client may try many lists)
        box.snapshots.clear()
    box.snapshots[name] = None
    if snap is None or snap.uidvalidity != info.uidvalidity:
        return None
    got = decode(snap.data)
    if got is None or got.upto != snap.uid_upto:
        log.warning("ignoring the SORT snapshot of mailbox %d (%s)", info.id, name)
        return None
    box.snapshots[name] = (snap.uid_upto, len(got.uids))
    return got


async def _save(s: ImapSession, info: MailboxInfo, name: str, box: SortBox,
                view: list[int], uids: list[int], nums: list[int] | None) -> None:
    """Write the order as the criteria's snapshot when the kept one misses ``EVERY`` of
    the view's rows (or none is kept)."""
    if len(view) < MIN_ROWS:
        return
    kept = box.snapshots.get(name)
    if kept is not None:
        upto, rows = kept
        covered = bisect.bisect_right(view, upto)
        if len(view) - covered + max(0, rows - covered) < EVERY:
            return
    data = encode(uids, nums if nums is not None else numbers(view, uids), view)
    if len(data) > SORT_SNAPSHOT_MAX:
        return
    upto = view[-1]
    try:
        await s.store.put_sort_snapshot(info.id, name,
                                        SortSnapshot(info.uidvalidity, upto, data))
    except (StoreError, ValueError) as exc:  # a full disk: the snapshot is only a cache
        log.warning("cannot keep the SORT snapshot: %s", exc)
        return
    box.snapshots[name] = (upto, len(uids))


async def _keys(s: ImapSession, info: MailboxInfo, box: SortBox, uids: list[int],
                meta: dict[int, MessageMeta]) -> dict[int, SortKeys] | None:
    """The kept keys of these messages of the view (None: one has none)."""
    out = {u: box.keys[u] for u in uids if u in box.keys}
    todo = [u for u in uids if u not in out]
    if todo:
        got = await s.store.get_sort_keys([meta[u].blob_id for u in todo])
        for u in todo:
            k = got.get(meta[u].blob_id)
            if k is None:
                return None
            out[u] = k
        s.ctx.imap_sortorders.remember_keys(info, {u: out[u] for u in todo})
    return out


async def view_order(s: ImapSession, criteria: Sequence[tuple[str, bool]],
                     keep: Callable[[list[int]], Awaitable[bool]], seqs: bool
                     ) -> tuple[list[int], list[int] | None] | None:
    """The UIDs of the session's view in SORT order, from the kept order of this mailbox
    and criteria (in memory, else the store's snapshot) brought up to date, and their
    sequence numbers (with ``seqs``, else when they are kept anyway); None when none is
    kept, too many messages arrived since, or a key is missing (a message expunged
    meanwhile): the caller sorts in full. ``keep(uids)`` computes and keeps the keys
    of arrivals that have none yet."""
    sel = s.selected
    if sel is None or not sel.uids:
        return None
    info, view, meta = sel.info, sel.uids, sel.meta
    cache = s.ctx.imap_sortorders
    name = criteria_name(criteria)
    box = cache.box(info)
    kept = cache.get(info, name)
    if kept is None and len(view) >= MIN_ROWS and name not in box.snapshots:
        kept = await _load(s, info, name, box)
    if kept is None:
        return None
    covers = kept.covers
    nums: list[int] | None = None
    with collector_paused():  # (a list of 100,000 numbers, no cycles)
        gone = None
        if covers is not None:
            gone = expunged(covers, view, GONE_FOUND)
            if gone is None:
                gone = expunged_any(covers, view)
        if covers is not None and gone is not None:
            order, nums = without_expunged(
                kept.uids.tolist(), kept.nums.tolist() if kept.nums is not None else None,
                covers, gone)
            arrivals = view[len(covers) - len(gone):]
        else:
            order = kept_part(kept.uids.tolist(), meta)
            arrivals = []
    if len(order) + len(arrivals) != len(view):
        nums = None
        # arrivals are usually the view's UIDs after the kept order's highest
        arrivals = view[bisect.bisect_right(view, kept.upto):]
        if len(order) + len(arrivals) != len(view):
            known = set(order)
            arrivals = [u for u in view if u not in known]
    if len(arrivals) > min(MAX_ARRIVALS, max(16, len(view) // 8)):
        return None  # (the bisections would read more keys than a full sort costs)
    if arrivals:
        ins = await _insert(s, info, box, criteria, order, arrivals, keep)
        if ins is None:
            return None
        with collector_paused():
            order = ins.result()
            if nums is not None:  # (then the arrivals are the view's last UIDs)
                first = len(view) - len(arrivals) + 1
                nums = ins.merged(nums, {u: first + j for j, u in enumerate(arrivals)})
    if seqs and nums is None:
        nums = numbers(view, order)
    cache.put(info, name, order, list(view), nums)
    await _save(s, info, name, box, view, order, nums)
    return order, nums


async def _insert(s: ImapSession, info: MailboxInfo, box: SortBox,
                  criteria: Sequence[tuple[str, bool]], order: list[int],
                  arrivals: list[int], keep: Callable[[list[int]], Awaitable[bool]]
                  ) -> Insertion | None:
    """The arrivals' places in the order, found (None: a key is missing)."""
    sel = s.selected
    assert sel is not None
    meta = sel.meta
    with_keys = needs_keys(criteria)

    async def keys_of(uids: list[int]) -> dict[int, Key] | None:
        if not with_keys:  # ARRIVAL, SIZE: the message's own metadata
            return {u: sort_key(criteria, meta[u], None) for u in uids}
        got = await _keys(s, info, box, uids, meta)
        if got is None:
            return None
        return {u: sort_key(criteria, meta[u], got[u]) for u in uids}

    try:
        new = await keys_of(arrivals)
        if new is None:  # arrivals whose keys are not kept yet: keep theirs first
            if not await keep(arrivals):
                return None
            new = await keys_of(arrivals)
            if new is None:
                return None
        ins = Insertion(order, [(k, u) for u, k in new.items()])
        while want := ins.wanted():
            got = await keys_of(want)
            if got is None:
                return None
            ins.feed(got)
    except StoreError:
        return None
    return ins


def remember(s: ImapSession, criteria: Sequence[tuple[str, bool]], uids: list[int]) -> None:
    """Keep the order a full sort gave for the session's view."""
    sel = s.selected
    if sel is not None:
        s.ctx.imap_sortorders.put(sel.info, criteria_name(criteria), uids, list(sel.uids))


async def remembered(s: ImapSession, criteria: Sequence[tuple[str, bool]],
                     uids: list[int]) -> None:
    """``remember``, and write the snapshot when the kept one is stale."""
    remember(s, criteria, uids)
    sel = s.selected
    if sel is not None:
        name = criteria_name(criteria)
        box = s.ctx.imap_sortorders.box(sel.info)
        await _save(s, sel.info, name, box, sel.uids, uids, None)
