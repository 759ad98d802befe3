"""The storage contract (pochta.storage.interfaces.MailStore), run against every backend.

Every backend joins by adding a factory to BACKENDS; every test here must pass for it
unchanged. PostgreSQL runs in a throwaway cluster (tests/pgcluster.py), a fresh schema per
test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pochta.storage.interfaces import (
    AlreadyExists,
    Envelope,
    FlagMode,
    LocalTarget,
    MailStore,
    NotFound,
    QueueState,
    QuotaExceeded,
    RemoteRecipient,
    SpecialUse,
    SpooledMessage,
    StoreError,
)
from pochta.storage.postgres import PostgresStore
from pochta.storage.sqlite import SQLiteStore
from tests.pgcluster import PgCluster

# Opens the test's store; called again on the same path, it opens the same store again.
Factory = Callable[[Path], Awaitable[MailStore]]


def sqlite_factory(request: pytest.FixtureRequest) -> Factory:
    async def open_store(path: Path) -> MailStore:
        return await SQLiteStore.open(path)

    return open_store


def postgres_factory(request: pytest.FixtureRequest) -> Factory:
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    dsn = cluster.fresh_dsn()

    async def open_store(path: Path) -> MailStore:
        return await PostgresStore.open(dsn)

    return open_store


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Factory]] = {
    "sqlite": sqlite_factory,
    "postgresql": postgres_factory,
}


@pytest.fixture(params=sorted(BACKENDS))
def factory(request: pytest.FixtureRequest) -> Factory:
    return BACKENDS[request.param](request)


@pytest.fixture
async def store(factory: Factory, tmp_path: Path) -> AsyncIterator[MailStore]:
    s = await factory(tmp_path)
    await s.add_domain("example.test")
    yield s
    await s.close()


MSG = b"Subject: test\r\n\r\nbody\r\n"
ENV = Envelope(sender="a@elsewhere.test")


async def account_id(store: MailStore, address: str = "alice@example.test") -> int:
    account = await store.get_account(address)
    if account is None:
        account = await store.add_account(address, "hash", None)
    return account.id


async def inbox_id(store: MailStore, acc: int) -> int:
    box = await store.get_mailbox(acc, "INBOX")
    assert box is not None
    return box.id


async def test_domains(store: MailStore) -> None:
    assert await store.has_domain("EXAMPLE.test")
    with pytest.raises(AlreadyExists):
        await store.add_domain("example.test")
    await store.add_domain("other.test")
    assert await store.list_domains() == ["example.test", "other.test"]
    await account_id(store)
    with pytest.raises(StoreError):
        await store.remove_domain("example.test")  # still has an account
    await store.remove_domain("other.test")
    with pytest.raises(NotFound):
        await store.remove_domain("other.test")


async def test_accounts_get_default_mailboxes(store: MailStore) -> None:
    acc = await store.add_account("Alice@Example.TEST", "hash", None)
    assert acc.address == "alice@example.test"
    with pytest.raises(AlreadyExists):
        await store.add_account("alice@example.test", "x", None)
    boxes = {b.name: b for b in await store.list_mailboxes(acc.id)}
    assert set(boxes) == {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"}
    assert boxes["Sent"].special_use is SpecialUse.SENT
    assert len({b.uidvalidity for b in boxes.values()}) == 6
    await store.update_account("alice@example.test", quota_bytes=10, may_send_as_anyone=True)
    updated = await store.get_account("alice@example.test")
    assert updated is not None and updated.quota_bytes == 10 and updated.may_send_as_anyone
    await store.remove_account("alice@example.test")
    assert await store.get_account("alice@example.test") is None
    assert await store.list_mailboxes(acc.id) == []


async def test_aliases(store: MailStore) -> None:
    await store.add_alias("sales@example.test", ["alice@example.test", "bob@remote.test"])
    alias = await store.get_alias("SALES@example.test")
    assert alias is not None and alias.targets == ("alice@example.test", "bob@remote.test")
    await store.add_alias("@example.test", ["alice@example.test"])
    assert [a.source for a in await store.list_aliases("example.test")] == [
        "@example.test", "sales@example.test"]
    await store.remove_alias("sales@example.test")
    assert await store.get_alias("sales@example.test") is None


async def test_aliases_naming_an_address(store: MailStore) -> None:
    """The groups of an address for ACL grants: aliases listing it, whole targets only."""
    await store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
    await store.add_alias("all@example.test", ["bob@example.test", "team@example.test"])
    await store.add_alias("@example.test", ["alice@example.test"])  # a catch-all: no group
    await store.add_alias("sales@example.test", ["xalice@example.test"])
    assert await store.aliases_naming("ALICE@example.test") == ["team@example.test"]
    assert await store.aliases_naming("bob@example.test") == ["all@example.test",
                                                              "team@example.test"]
    assert await store.aliases_naming("carol@example.test") == []
    assert await store.aliases_naming("%") == []


async def test_find_addresses_reads_aliases_and_accounts_at_once(store: MailStore) -> None:
    alice = await store.add_account("alice@example.test", "hash", None)
    await store.update_account("alice@example.test", disabled=True, quota_bytes=99)
    await store.add_alias("sales@example.test", ["alice@example.test", "bob@remote.test"])
    await store.add_alias("@example.test", ["alice@example.test"])
    found = await store.find_addresses(
        ["Alice@example.test", "sales@example.test", "@example.test", "nobody@example.test"])
    assert set(found.accounts) == {"alice@example.test"}
    got = found.accounts["alice@example.test"]
    assert (got.id, got.disabled, got.quota_bytes) == (alice.id, True, 99)
    assert found.aliases["sales@example.test"].targets == (
        "alice@example.test", "bob@remote.test")
    assert found.aliases["@example.test"].targets == ("alice@example.test",)
    assert set(found.aliases) == {"sales@example.test", "@example.test"}
    empty = await store.find_addresses([])
    assert (empty.aliases, empty.accounts) == ({}, {})


async def test_accept_local_and_remote_in_one_transaction(store: MailStore) -> None:
    alice, bob = await account_id(store), await account_id(store, "bob@example.test")
    result = await store.accept(MSG, ENV, [LocalTarget(alice), LocalTarget(bob, "Junk")],
                                [RemoteRecipient("carol@remote.test", "FAILURE", None)])
    assert len(result.local_uids) == 2
    assert await store.read_blob(result.blob_id) == MSG
    junk = await store.get_mailbox(bob, "Junk")
    assert junk is not None and [m.uid for m in await store.list_messages(junk.id)] == [1]
    [item] = await store.list_queue()
    assert item.message_id == result.message_id and item.state is QueueState.PENDING
    assert item.recipient.notify == "FAILURE" and item.envelope.sender == "a@elsewhere.test"


async def test_uids_ascend_and_are_never_reused(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    for _ in range(3):
        await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert await store.expunge(box, [3]) == [3]
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert [m.uid for m in await store.list_messages(box)] == [1, 2, 4]
    status = await store.mailbox_status(box)
    assert status.uidnext == 5 and status.messages == 3 and status.unseen == 3


async def test_state_survives_reopen(factory: Factory, tmp_path: Path) -> None:
    s = await factory(tmp_path)
    await s.add_domain("example.test")
    acc = await account_id(s)
    box = await inbox_id(s, acc)
    await s.accept(MSG, ENV, [LocalTarget(acc, flags=frozenset({"$Label1"}))])
    await s.store_flags(box, [1], frozenset({"\\Seen"}), FlagMode.ADD)
    before = await s.get_mailbox(acc, "INBOX")
    await s.close()
    s = await factory(tmp_path)
    try:
        after = await s.get_mailbox(acc, "INBOX")
        assert before == after
        [meta] = await s.list_messages(box)
        assert meta.flags == {"\\Seen", "$Label1"}
        assert await s.read_blob(meta.blob_id) == MSG
    finally:
        await s.close()


async def test_flags_modseq_and_unchangedsince(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    start = (await store.mailbox_status(box)).highestmodseq
    update = await store.store_flags(box, [1, 2], frozenset({"\\Seen"}), FlagMode.ADD)
    assert [m.uid for m in update.changed] == [1, 2]
    modseq = update.changed[0].modseq
    assert modseq > start
    # no change, no new modseq
    assert (await store.store_flags(box, [1], frozenset({"\\Seen"}), FlagMode.ADD)).changed == ()
    refused = await store.store_flags(box, [1], frozenset(), FlagMode.REPLACE,
                                      unchanged_since=modseq - 1)
    assert refused.failed_uids == (1,) and refused.changed == ()
    removed = await store.store_flags(box, [2], frozenset({"\\Seen"}), FlagMode.REMOVE)
    assert removed.changed[0].flags == frozenset()
    changes = await store.changes_since(box, modseq)
    assert [m.uid for m in changes.changed] == [2]
    await store.store_flags(box, [1], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert await store.expunge(box) == [1]
    changes = await store.changes_since(box, modseq)
    assert changes.expunged == (1,)
    assert (await store.mailbox_status(box)).deleted == 0


async def test_copy_move_share_the_blob(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    archive = await store.get_mailbox(acc, "Archive")
    assert archive is not None
    result = await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert await store.copy_messages(box, [1], archive.id) == [(1, 1)]
    assert await store.move_messages(box, [1], archive.id) == [(1, 2)]
    assert await store.list_messages(box) == []
    metas = await store.list_messages(archive.id)
    assert {m.blob_id for m in metas} == {result.blob_id}
    assert await store.account_usage(acc) == 2 * len(MSG)


async def test_mailbox_create_rename_delete(store: MailStore) -> None:
    acc = await account_id(store)
    await store.create_mailbox(acc, "Projects")
    await store.create_mailbox(acc, "Projects/2026")
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(acc, "Projects")
    await store.rename_mailbox(acc, "Projects", "Work")
    names = {b.name for b in await store.list_mailboxes(acc)}
    assert {"Work", "Work/2026"} <= names and "Projects" not in names
    await store.set_subscribed(acc, "Work", False)
    work = await store.get_mailbox(acc, "Work")
    assert work is not None and not work.subscribed
    await store.delete_mailbox(acc, "Work/2026")
    assert await store.get_mailbox(acc, "Work/2026") is None
    with pytest.raises(StoreError):
        await store.delete_mailbox(acc, "INBOX")


async def test_rename_inbox_moves_messages_and_keeps_inbox(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    await store.rename_mailbox(acc, "inbox", "Old")
    assert await store.list_messages(box) == []
    old = await store.get_mailbox(acc, "Old")
    assert old is not None and len(await store.list_messages(old.id)) == 1
    # UIDs in INBOX keep ascending after the rename
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert [m.uid for m in await store.list_messages(box)] == [2]


async def test_claim_recent(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert (await store.mailbox_status(box)).recent == 1
    assert await store.claim_recent(box) == 1
    assert (await store.mailbox_status(box)).recent == 0
    assert await store.claim_recent(box) == 2


async def test_watch_wakes_on_delivery_and_flag_change(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    watcher = store.watch(box)
    try:
        assert not await watcher.wait(0.05)
        waiting = asyncio.create_task(watcher.wait(5))
        await store.accept(MSG, ENV, [LocalTarget(acc)])
        assert await waiting
        await store.store_flags(box, [1], frozenset({"\\Seen"}), FlagMode.ADD)
        assert await watcher.wait(1)
    finally:
        watcher.close()


async def test_quota_is_enforced_on_delivery(store: MailStore) -> None:
    acc = await account_id(store)
    await store.update_account("alice@example.test", quota_bytes=len(MSG) * 2)
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    with pytest.raises(QuotaExceeded):
        await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert len(await store.list_messages(await inbox_id(store, acc))) == 2


async def test_concurrent_accepts_are_group_committed(store: MailStore) -> None:
    acc = await account_id(store)
    box = await inbox_id(store, acc)
    results = await asyncio.gather(*[
        store.accept(MSG + str(i).encode(), ENV, [LocalTarget(acc)]) for i in range(200)])
    assert sorted(uid for r in results for _, uid in r.local_uids) == list(range(1, 201))
    for r in results[:5]:
        assert (await store.read_blob(r.blob_id)).startswith(MSG)
    assert (await store.mailbox_status(box)).messages == 200


async def test_one_failing_job_does_not_spoil_its_batch(store: MailStore) -> None:
    acc = await account_id(store)
    outcomes = await asyncio.gather(
        store.accept(MSG, ENV, [LocalTarget(acc)]),
        store.add_domain("example.test"),  # fails: exists
        store.accept(MSG, ENV, [LocalTarget(acc)]),
        return_exceptions=True)
    assert isinstance(outcomes[1], AlreadyExists)
    assert len(await store.list_messages(await inbox_id(store, acc))) == 2


async def test_queue_lifecycle(store: MailStore) -> None:
    acc = await account_id(store)
    await store.accept(MSG, ENV, [LocalTarget(acc)], [RemoteRecipient("x@remote.test"),
                                                      RemoteRecipient("y@remote.test")])
    now = time.time() + 1
    x, y = await store.due_queue_items(now)
    await store.update_queue_item(x.id, QueueState.DEFERRED, now + 600, "451 4.3.0 later")
    await store.update_queue_item(y.id, QueueState.DELIVERED, now, "250 ok")
    assert await store.due_queue_items(now) == []
    [again] = await store.due_queue_items(now + 601)
    assert again.attempts == 1 and again.last_reply == "451 4.3.0 later"
    assert await store.purge_queue(now + 1) == 1
    await store.delete_queue_item(x.id)
    assert await store.list_queue() == []


async def test_recreated_mailbox_gets_a_new_uidvalidity(store: MailStore) -> None:
    acc = await account_id(store)
    first = await store.create_mailbox(acc, "Tmp")
    await store.delete_mailbox(acc, "Tmp")
    second = await store.create_mailbox(acc, "Tmp")
    assert second.uidvalidity > first.uidvalidity  # RFC 9051 §2.3.1.1


async def test_subscriptions_are_names_that_outlive_mailboxes(store: MailStore) -> None:
    acc = await account_id(store)
    assert "INBOX" in await store.list_subscriptions(acc)  # defaults are subscribed
    box = await store.create_mailbox(acc, "Lists")
    assert not box.subscribed
    await store.set_subscribed(acc, "Lists", True)
    await store.set_subscribed(acc, "Not/There/Yet", True)
    lists = await store.get_mailbox(acc, "Lists")
    assert lists is not None and lists.subscribed
    await store.rename_mailbox(acc, "Lists", "Groups")
    await store.delete_mailbox(acc, "Groups")
    assert {"Groups", "Not/There/Yet"} <= set(await store.list_subscriptions(acc))
    await store.set_subscribed(acc, "Groups", False)
    assert "Groups" not in await store.list_subscriptions(acc)


async def test_large_and_small_messages_survive_reopen(factory: Factory, tmp_path: Path) -> None:
    """Small bodies may live in the index and large ones in segments: both read back
    byte for byte, also after the store is closed and opened again."""
    s = await factory(tmp_path)
    await s.add_domain("example.test")
    acc = await account_id(s)
    big = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 40_000 + b"\r\n"  # ~640 KB
    small = await s.accept(MSG, ENV, [LocalTarget(acc)])
    large = await s.accept(big, ENV, [LocalTarget(acc)])
    await s.close()
    s = await factory(tmp_path)
    try:
        assert await s.read_blob(small.blob_id) == MSG
        assert await s.read_blob(large.blob_id) == big
    finally:
        await s.close()


async def test_delivery_to_a_deleted_folder_lands_in_inbox(store: MailStore) -> None:
    acc = await account_id(store)
    await store.delete_mailbox(acc, "Junk")
    result = await store.accept(MSG, ENV, [LocalTarget(acc, "Junk")])
    assert result.local_uids == ((await inbox_id(store, acc), 1),)


async def test_replace_message(store: MailStore, tmp_path: Path) -> None:
    """IMAP REPLACE (RFC 8508 §3.4): the new message in, the old one expunged, in one
    transaction; the quota sees the net growth; a message gone writes nothing."""
    acc = await account_id(store)
    drafts = await store.get_mailbox(acc, "Drafts")  # one of the special-use defaults
    assert drafts is not None
    first = await store.accept(b"Subject: v1\r\n\r\nold\r\n", ENV, [LocalTarget(acc, "Drafts")])
    old_uid = first.local_uids[0][1]
    before = (await store.changes_since(drafts.id, 0)).highestmodseq
    new = b"Subject: v2\r\n\r\nnew text\r\n"
    result = await store.replace_message(
        drafts.id, old_uid, new, LocalTarget(acc, "Drafts", frozenset({"\\Draft"}), 1e9))
    [(box, new_uid)] = result.local_uids
    assert box == drafts.id and new_uid > old_uid
    [meta] = await store.list_messages(drafts.id)
    assert (meta.uid, meta.flags, meta.internaldate) == (new_uid, frozenset({"\\Draft"}), 1e9)
    assert await store.read_blob(meta.blob_id) == new
    changes = await store.changes_since(drafts.id, before)
    assert changes.expunged == (old_uid,) and [m.uid for m in changes.changed] == [new_uid]
    # the old message is gone: NotFound, and nothing is written
    with pytest.raises(NotFound):
        await store.replace_message(drafts.id, old_uid, b"Subject: v3\r\n\r\nx\r\n",
                                    LocalTarget(acc, "Drafts"))
    assert [m.uid for m in await store.list_messages(drafts.id)] == [new_uid]
    # into another mailbox (RFC 8508 §3.4: Drafts to Sent), from a spool file
    spool = tmp_path / "spool"
    spool.write_bytes(b"......" + b"body\r\n" * 1000)
    result = await store.replace_message(
        drafts.id, new_uid, SpooledMessage(str(spool), 6000, b"Subject: sent\r\n\r\n", 6),
        LocalTarget(acc, "Sent"))
    assert await store.list_messages(drafts.id) == []
    [sent] = await store.list_messages(result.local_uids[0][0])
    assert (await store.read_blob(sent.blob_id)).startswith(b"Subject: sent\r\n\r\nbody\r\n")
    # the quota counts the net growth: a replacement 4 bytes bigger fits in 5 bytes left
    used = await store.account_usage(acc)
    await store.update_account("alice@example.test", quota_bytes=used + 5)
    with pytest.raises(QuotaExceeded):  # an APPEND of the same would not fit
        await store.accept(b"x" * 6, ENV, [LocalTarget(acc, "Sent")])
    bigger = await store.read_blob(sent.blob_id) + b"more"
    result = await store.replace_message(result.local_uids[0][0], sent.uid, bigger,
                                         LocalTarget(acc, "Sent"))
    assert await store.account_usage(acc) == used + 4
    with pytest.raises(QuotaExceeded):  # 6 bytes more than the old one: over
        await store.replace_message(result.local_uids[0][0], result.local_uids[0][1],
                                    bigger + b"xx", LocalTarget(acc, "Sent"))
    assert await store.account_usage(acc) == used + 4
