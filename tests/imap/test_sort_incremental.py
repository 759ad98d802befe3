"""SORT ... ALL of a view not seen before from a kept order (server/imap_sortorder.py):
after arrivals and expunges, in a session whose view is behind another's, and after a
restart from the store's snapshot, every answer must be the server's own sort of the
view (SORT ... UNDELETED takes that path here), and the store must not sort the
whole mailbox again."""

from __future__ import annotations

import random
from typing import Any

from pochta.server import imap_sortorder
from tests.conftest import Server
from tests.imap.helpers import Client, connect, st

CRITERIA = ("DATE", "REVERSE DATE", "ARRIVAL", "REVERSE ARRIVAL", "SIZE", "SUBJECT",
            "REVERSE SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "REVERSE DISPLAYTO",
            "SUBJECT REVERSE DATE", "REVERSE FROM SIZE", "CC TO REVERSE ARRIVAL")
NAMES = ("amy", "bob", "Zed", "émile", "\U0001f600x")


def message(rng: random.Random) -> bytes:
    """Few distinct values: many ties for every key."""
    who = rng.choice(NAMES)
    head = (f"From: {who.title()} <{who}@example.test>\r\n"
            f"To: {rng.choice(NAMES)}@example.test\r\n"
            + (f"Cc: {rng.choice(NAMES)}@example.test\r\n" if rng.random() < 0.5 else "")
            + f"Subject: {rng.choice(['', 'Re: ', 'Fwd: '])}{rng.choice(['a', 'B', 'é'])}\r\n")
    if rng.random() < 0.8:  # else no Date: the internal date counts (RFC 5256 §2.2)
        head += f"Date: Fri, {rng.choice([1, 2])} Jan 2027 10:00:00 +0000\r\n"
    return (head + "\r\n" + "x" * rng.choice([1, 5]) + "\r\n").encode()


async def append(c: Client, data: bytes) -> None:
    assert b"OK" in (await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(data) + data))[-1]


def count_store_sorts(imap_server: Server, monkeypatch: Any) -> list[object]:
    store = imap_server.store
    calls: list[object] = []
    real = store.sorted_uids

    async def sorted_uids(mailbox_id: int, criteria: Any) -> list[int]:
        calls.append(tuple(criteria))
        return await real(mailbox_id, criteria)

    monkeypatch.setattr(store, "sorted_uids", sorted_uids)
    return calls


async def agree(c: Client, crit: str) -> None:
    fast = await c.cmd(f"SORT ({crit}) UTF-8 ALL")
    general = await c.cmd(f"SORT ({crit}) UTF-8 UNDELETED")
    assert fast[0] == general[0], (crit, fast, general)
    fast = await c.cmd(f"UID SORT ({crit}) UTF-8 ALL")
    general = await c.cmd(f"UID SORT ({crit}) UTF-8 UNDELETED")
    assert fast[0] == general[0], (crit, fast, general)


async def test_kept_orders_follow_arrivals_and_expunges(imap_server: Server,
                                                        monkeypatch: Any) -> None:
    from pochta.server.imap_sortcache import SortOrders

    imap_server.ctx.imap_sortorders = SortOrders(per_mailbox=len(CRITERIA))
    calls = count_store_sorts(imap_server, monkeypatch)
    rng = random.Random(5256)
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        for _ in range(30):
            await append(c, message(rng))
        await c.cmd("SELECT INBOX")
        await other.cmd("SELECT INBOX")
        for crit in CRITERIA:
            await agree(c, crit)
        assert len(set(calls)) == len(CRITERIA)  # the first of each: the store sorts
        first = len(calls)  # (DATE twice: no keys kept before it)
        for round_ in range(12):
            for _ in range(rng.randint(0, 3)):
                await append(other, message(rng))
            await other.cmd("NOOP")
            # (10 at once, now and then; in round 9 more than GONE_FOUND: set operations
            # over every UID)
            monkeypatch.setattr(imap_sortorder, "GONE_FOUND", 8 if round_ == 9 else 64)
            gone = rng.sample(range(1, 20), 10 if round_ % 5 == 4 else rng.randint(0, 2))
            if gone:
                await other.cmd(f"STORE {','.join(map(str, gone))} +FLAGS (\\Deleted)")
                assert st(await other.cmd("EXPUNGE")).startswith(b"OK")
            if round_ % 3 == 0:  # the other session's view first (c's lags behind it)
                for crit in rng.sample(CRITERIA, 4):
                    await agree(other, crit)
            await c.cmd("NOOP")
            for crit in CRITERIA:
                await agree(c, crit)
        assert len(calls) == first  # every later view: the kept orders


def test_sort_orders_are_bounded() -> None:
    from pochta.server.imap_sortcache import SortOrders
    from pochta.storage.interfaces import MailboxInfo

    def box(id_: int, validity: int = 1) -> MailboxInfo:
        return MailboxInfo(id_, 1, "INBOX", validity, 10, 0, None, True)

    orders = SortOrders(mailboxes=2, per_mailbox=3)
    for name in ("A", "B", "C", "D"):
        orders.put(box(1), name, [2, 1], [1, 2])
    assert list(orders.box(box(1)).orders) == ["B", "C", "D"]
    same = orders.box(box(1)).orders
    assert same["B"].covers is same["D"].covers  # one list for the same view
    orders.put(box(1), "D", [1], [1])  # a view behind: the kept order stays
    kept = orders.get(box(1), "D")
    assert kept is not None and kept.upto == 2
    assert orders.get(box(1, 2), "D") is None  # another UIDVALIDITY
    orders.put(box(2), "A", [1], [1])
    assert orders.get(box(1), "D") is None  # three mailboxes: the oldest went


async def test_a_view_behind_is_answered_and_does_not_undo(imap_server: Server,
                                                           monkeypatch: Any) -> None:
    calls = count_store_sorts(imap_server, monkeypatch)
    rng = random.Random(9)
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        for _ in range(10):
            await append(c, message(rng))
        await c.cmd("SELECT INBOX")
        await other.cmd("SELECT INBOX")
        await agree(c, "FROM")
        first = len(calls)
        for _ in range(3):
            await append(other, message(rng))
        await other.cmd("NOOP")
        await agree(other, "FROM")  # 13 messages
        behind = await c.cmd("SORT (FROM) UTF-8 ALL")  # c sees 10 yet
        assert sorted(map(int, behind[0].split()[2:])) == list(range(1, 11))
        assert b"* 13 EXISTS\r\n" in behind
        order = imap_server.ctx.imap_sortorders.boxes
        assert next(iter(order.values())).orders["FROM"].upto == 13  # not undone
        await agree(c, "FROM")
        assert len(calls) == first


async def test_sort_snapshot_after_a_restart(imap_server: Server, monkeypatch: Any) -> None:
    """The first SORT of a criteria list keeps the order in the store; after a restart
    (the process's caches gone) SORT starts from it: arrivals since are inserted, messages
    expunged since dropped. A snapshot of another UIDVALIDITY, or one that does not
    decode, is ignored; a new one is written once the kept one misses EVERY rows."""
    from pochta.server import imap_sortorder
    from pochta.server.imap_cache import ThreadCache
    from pochta.server.imap_sortcache import SortOrders
    from pochta.storage.interfaces_imap import SortSnapshot

    monkeypatch.setattr(imap_sortorder, "MIN_ROWS", 1)
    monkeypatch.setattr(imap_sortorder, "EVERY", 3)
    calls = count_store_sorts(imap_server, monkeypatch)
    store = imap_server.store

    def restart() -> None:
        imap_server.ctx.imap_sortorders = SortOrders()
        imap_server.ctx.imap_threads = ThreadCache()
        calls.clear()

    rng = random.Random(1)
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        for _ in range(8):
            await append(c, message(rng))
        await c.cmd("SELECT INBOX")
        await other.cmd("SELECT INBOX")
        await agree(c, "SUBJECT REVERSE DATE")
        assert len(calls) == 2  # (no keys kept before it: they are, then the store sorts)
        snaps = {i: await store.get_sort_snapshot(i, "SUBJECT REVERSE DATE")
                 for i in range(1, 20)}
        kept = {i: x for i, x in snaps.items() if x is not None}
        assert len(kept) == 1
        mailbox_id, first = next(iter(kept.items()))
        assert first.uid_upto == 8

        restart()
        await append(other, message(rng))
        await c.cmd("NOOP")
        await agree(c, "SUBJECT REVERSE DATE")
        assert calls == []  # the snapshot and one arrival inserted

        restart()
        await other.cmd("STORE 5 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        await c.cmd("NOOP")
        await agree(c, "SUBJECT REVERSE DATE")
        assert calls == []
        snap = await store.get_sort_snapshot(mailbox_id, "SUBJECT REVERSE DATE")
        assert snap == first  # 1 arrival + 1 expunged since: fewer than EVERY

        for _ in range(3):
            await append(other, message(rng))
        await c.cmd("NOOP")
        await agree(c, "SUBJECT REVERSE DATE")
        snap = await store.get_sort_snapshot(mailbox_id, "SUBJECT REVERSE DATE")
        assert snap is not None and snap.uid_upto == 12  # written again

        good = await store.get_sort_snapshot(mailbox_id, "SUBJECT REVERSE DATE")
        assert good is not None
        assert imap_sortorder.decode(good.data) is not None
        damaged = bytearray(good.data)
        damaged[-1] ^= 1
        encode = imap_sortorder.encode
        for bad in (b"not a snapshot", bytes(damaged), encode([1, 2], [1, 2], [1, 3]),
                    encode([2, 1], [2, 1], [2, 1]), encode([2, 1], [1, 2], [1, 2]), None):
            if bad is not None:
                assert imap_sortorder.decode(bad) is None
            restart()
            await store.put_sort_snapshot(mailbox_id, "SUBJECT REVERSE DATE", SortSnapshot(
                good.uidvalidity + (bad is None), good.uid_upto, bad or good.data))
            await agree(c, "SUBJECT REVERSE DATE")
            assert len(calls) == 1  # ignored: sorted by the store
