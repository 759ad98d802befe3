"""Reads that every IMAP command of some kind makes (changes since a modseq, STATUS's
counts, LIST's mailboxes and ACL grants, METADATA) give the same answers on both
backends, for small answers (SQLite: read on the event loop's connection, bounded by a
LIMIT) and for answers past that bound (read again, whole, on a reader thread)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pochta.storage.interfaces import FlagMode, LocalTarget, MailStore, NotFound
from pochta.storage.sqlite import INLINE_CHANGES, SQLiteStore
from tests.storage.test_conformance import (  # noqa: F401 (fixtures)
    ENV,
    MSG,
    account_id,
    factory,
    inbox_id,
    store,
)

MANY = INLINE_CHANGES + 5  # past the loop's bound


async def test_changes_since_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    for i in range(MANY):
        await store.accept(MSG + str(i).encode(), ENV, [LocalTarget(acc)])
    start = (await store.changes_since(box, 0)).highestmodseq
    assert len((await store.changes_since(box, 0)).changed) == MANY
    # nothing since the top: no rows
    nothing = await store.changes_since(box, start)
    assert nothing.highestmodseq == start and nothing.changed == () and nothing.expunged == ()
    # a few changes: read on the loop
    await store.store_flags(box, [3, 1], frozenset({"\\Seen"}), FlagMode.ADD)
    few = await store.changes_since(box, start)
    assert [m.uid for m in few.changed] == [1, 3] and few.expunged == ()
    assert few.highestmodseq > start
    assert all(m.flags == frozenset({"\\Seen"}) for m in few.changed)
    # many flag changes and many expunges: past the bound, same shape of answer
    uids = list(range(1, MANY + 1))
    await store.store_flags(box, uids, frozenset({"\\Deleted"}), FlagMode.ADD)
    mid = (await store.changes_since(box, 0)).highestmodseq
    many = await store.changes_since(box, start)
    assert [m.uid for m in many.changed] == uids
    assert many.highestmodseq == mid
    gone = await store.expunge(box, uids[: MANY - 2])
    after = await store.changes_since(box, mid)
    assert list(after.expunged) == sorted(gone) and len(gone) == MANY - 2
    assert after.changed == ()
    with pytest.raises(NotFound):
        await store.changes_since(10_000, 0)


async def test_mailbox_status_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    empty = await store.mailbox_status(box)
    assert (empty.messages, empty.size, empty.unseen, empty.recent) == (0, 0, 0, 0)
    for n in (3, MANY):
        while (await store.mailbox_status(box)).messages < n:
            await store.accept(MSG, ENV, [LocalTarget(acc)])
        await store.store_flags(box, [1, 2], frozenset({"\\Seen"}), FlagMode.ADD)
        await store.store_flags(box, [2], frozenset({"\\Deleted"}), FlagMode.ADD)
        await store.claim_recent(box)
        await store.accept(MSG, ENV, [LocalTarget(acc)])  # the one recent message
        status = await store.mailbox_status(box)
        assert status.messages == n + 1
        assert status.size == (n + 1) * len(MSG)
        assert (status.unseen, status.deleted, status.recent) == (n - 1, 1, 1)
        assert status.uidnext == n + 2
    with pytest.raises(NotFound):
        await store.mailbox_status(10_000)


async def test_list_mailboxes_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    acc = await account_id(store)
    before = [m.name for m in await store.list_mailboxes(acc)]
    assert before == sorted(before) and "INBOX" in before
    names = [f"box{i:04d}" for i in range(MANY, 0, -1)]  # created out of order
    for name in names:
        await store.create_mailbox(acc, name)
    listed = [m.name for m in await store.list_mailboxes(acc)]
    assert listed == sorted([*before, *names])


async def test_acl_grants_sorted_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    owner = await account_id(store)
    await store.add_account("bob@example.test", "hash", None)
    names = [f"shared{i:04d}" for i in range(MANY, 0, -1)]
    for i, name in enumerate(names):
        await store.create_mailbox(owner, name)
        box = await store.get_mailbox(owner, name)
        assert box is not None
        await store.set_acl(box.id, "bob@example.test" if i % 2 else "anyone", "lr")
        if i == 2:
            few = await store.acl_grants(["bob@example.test", "anyone"])
            assert [g.mailbox for g in few] == sorted(names[:3])
    grants = await store.acl_grants(["bob@example.test", "anyone"])
    assert [g.mailbox for g in grants] == sorted(names)
    assert {g.identifier for g in grants} == {"bob@example.test", "anyone"}
    assert await store.acl_grants(["nobody@example.test"]) == []


async def test_metadata_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    assert await store.get_metadata(acc, box) == {}
    await store.set_metadata(acc, box, {"/shared/imapsieve/script": b"filter"})
    assert await store.get_metadata(acc, box) == {"/shared/imapsieve/script": b"filter"}
    many = {f"/private/e{i:04d}": b"v%d" % i for i in range(MANY)}
    await store.set_metadata(acc, box, many)
    assert await store.get_metadata(acc, box) == {**many,
                                                  "/shared/imapsieve/script": b"filter"}


async def test_sqlite_lone_failing_job_commits_nothing(tmp_path: Path) -> None:
    """A job alone in its batch runs without a savepoint: when it fails, its statements
    before the failure are rolled back with the transaction, and the writer goes on."""
    lite = await SQLiteStore.open(tmp_path)
    try:
        def half_done(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("INSERT INTO domains VALUES ('half.test')")
            raise NotFound("fails after a write")

        with pytest.raises(NotFound):
            await lite._write(half_done)
        assert not await lite.has_domain("half.test")
        await lite.add_domain("after.test")  # the writer still works
        assert await lite.list_domains() == ["after.test"]
    finally:
        await lite.close()


async def test_expunge_small_and_past_the_bound(store: MailStore) -> None:  # noqa: F811
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    assert await store.expunge(box) == []  # empty mailbox
    for _ in range(3):
        await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert await store.expunge(box) == []  # nothing flagged \Deleted
    await store.store_flags(box, [2], frozenset({"\\Deleted", "\\Seen"}), FlagMode.ADD)
    await store.store_flags(box, [3], frozenset({"$NotDeleted"}), FlagMode.ADD)
    assert await store.expunge(box) == [2]
    while (await store.mailbox_status(box)).messages < MANY:
        await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert await store.expunge(box) == []
    top = (await store.mailbox_status(box)).uidnext - 1
    await store.store_flags(box, [1, top], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert await store.expunge(box) == [1, top]
    assert (await store.mailbox_status(box)).messages == MANY - 2


async def test_sqlite_expunge_of_nothing_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EXPUNGE in a small mailbox without \\Deleted messages answers from one read on the
    loop's connection: no write transaction, no hop to the writer thread."""
    lite = await SQLiteStore.open(tmp_path)
    try:
        await lite.add_domain("example.test")
        acc = await lite.add_account("alice@example.test", "hash", None)
        box = await lite.get_mailbox(acc.id, "INBOX")
        assert box is not None
        await lite.accept(MSG, ENV, [LocalTarget(acc.id)])
        writes: list[object] = []
        real_write = lite._write

        async def counting_write(fn: object, *args: object, **kw: object) -> object:
            writes.append(fn)
            return await real_write(fn, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(lite, "_write", counting_write)
        assert await lite.expunge(box.id) == []
        assert writes == []
        await lite.store_flags(box.id, [1], frozenset({"\\Deleted"}), FlagMode.ADD)
        assert await lite.expunge(box.id) == [1]
        assert len(writes) == 2  # the flag change and the expunge
    finally:
        await lite.close()
