"""The operations part of the storage contract (interfaces_ops.py) on every backend of the
conformance suite: the mail log, app passwords, queue holds and the dashboard's counts."""

from __future__ import annotations

import hashlib
import time

import pytest

from pochta.storage.interfaces import (
    AlreadyExists,
    Envelope,
    MailStore,
    NotFound,
    QueueState,
    RemoteRecipient,
)
from pochta.storage.interfaces_ops import NewMailEvent
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401

ENV = Envelope(sender="a@example.test")


async def test_mail_log_search_paging_and_retention(store: MailStore) -> None:  # noqa: F811
    events = [NewMailEvent(1000.0 + n, "accepted", f"ID{n % 3}", f"Sender{n % 2}@Ex.test",
                           f"r{n}@remote.test", "192.0.2.1", "spam" if n % 5 == 0 else "ham",
                           f"accepted <b>{n}</b>") for n in range(30)]
    await store.record_mail_events(events)
    await store.record_mail_events([NewMailEvent(2000.0, "session", detail="disconnect")])
    everything = await store.search_mail_events()
    assert len(everything) == 31 and everything[0].kind == "session"
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    by_id = await store.search_mail_events("ID1")
    assert len(by_id) == 10 and {e.message_id for e in by_id} == {"ID1"}
    # addresses are compared case-insensitively, stored lower-case
    by_sender = await store.search_mail_events("SENDER0@ex.test")
    assert len(by_sender) == 15 and by_sender[0].sender == "sender0@ex.test"
    by_rcpt = await store.search_mail_events("r7@remote.test")
    assert [e.detail for e in by_rcpt] == ["accepted <b>7</b>"]
    assert await store.search_mail_events("nobody@nowhere.test") == []
    # pages: newest first, then older ones below the last id seen
    first = await store.search_mail_events("sender1@ex.test", limit=6)
    second = await store.search_mail_events("sender1@ex.test", before_id=first[-1].id,
                                            limit=6)
    third = await store.search_mail_events("sender1@ex.test", before_id=second[-1].id,
                                           limit=6)
    ids = [e.id for e in first + second + third]
    assert len(ids) == 15 and len(set(ids)) == 15 and ids == sorted(ids, reverse=True)
    # aggregates
    counts = await store.count_mail_events(1000.0)
    assert counts[("accepted", "spam")] == 6 and counts[("accepted", "ham")] == 24
    assert counts[("session", "")] == 1
    assert (await store.count_mail_events(1025.0))[("accepted", "ham")] == 4
    top = await store.top_mail_addresses("accepted", "sender", 1000.0)
    assert top == [("sender0@ex.test", 15), ("sender1@ex.test", 15)]
    assert len(await store.top_mail_addresses("accepted", "recipient", 1000.0, limit=3)) == 3
    with pytest.raises(ValueError):
        await store.top_mail_addresses("accepted", "detail; DROP TABLE x", 0.0)
    # retention
    assert await store.purge_mail_events(1010.0) == 10
    assert len(await store.search_mail_events()) == 21


async def test_app_passwords(store: MailStore) -> None:  # noqa: F811
    acc = (await store.add_account("alice@example.test", "$argon2id$x", None)).id
    other = (await store.add_account("bob@example.test", "$argon2id$y", None)).id
    digest = hashlib.sha256(b"secret-one").digest()
    pid = await store.add_app_password(acc, "phone", digest, 100.0)
    await store.add_app_password(acc, "laptop", hashlib.sha256(b"two").digest(), 101.0)
    await store.add_app_password(other, "phone", hashlib.sha256(b"three").digest(), 102.0)
    with pytest.raises(AlreadyExists):
        await store.add_app_password(acc, "phone", hashlib.sha256(b"four").digest(), 103.0)
    listed = await store.list_app_passwords(acc)
    assert [p.name for p in listed] == ["laptop", "phone"]
    assert listed[1].secret_hash == digest and listed[1].last_used is None
    found = await store.find_app_password(acc, digest)
    assert found is not None and found.id == pid and found.created == 100.0
    assert await store.find_app_password(other, digest) is None  # another account's
    await store.touch_app_password(pid, 555.0)
    found = await store.find_app_password(acc, digest)
    assert found is not None and found.last_used == 555.0
    await store.revoke_app_password(acc, "phone")
    assert await store.find_app_password(acc, digest) is None
    with pytest.raises(NotFound):
        await store.revoke_app_password(acc, "phone")
    # removing the account removes its app passwords
    await store.remove_account("bob@example.test")
    assert await store.list_app_passwords(other) == []


async def test_held_items_are_never_claimed(store: MailStore) -> None:  # noqa: F811
    for n in range(4):
        await store.accept(b"Subject: q\r\n\r\nq\r\n", ENV, [],
                           [RemoteRecipient(f"r{n}@remote.test")])
    items = sorted(await store.list_queue(), key=lambda i: i.id)
    held = [items[0].id, items[1].id]
    assert await store.hold_queue_items(held) == 2
    assert await store.hold_queue_items(held) == 0  # already held
    assert await store.held_queue_ids() == set(held)
    now = time.time() + 10
    claimed = await store.claim_queue_items(now, 10, "node-a:1:x", 60)
    assert {i.id for i in claimed} == {items[2].id, items[3].id}
    assert {i.id for i in await store.due_queue_items(now)} <= {items[2].id, items[3].id}
    # even when its lease runs out or a retry makes it due, a held item stays put
    await store.reschedule_queue_items(held, 0.0)
    late = await store.claim_queue_items(now + 120, 10, "node-b:2:y", 60)
    assert not {i.id for i in late} & set(held)
    assert not {i.id for i in await store.due_queue_items(now + 120)} & set(held)
    assert await store.release_held_queue_items([held[0]]) == 1
    again = await store.claim_queue_items(now + 200, 10, "node-c:3:z", 60)
    assert held[0] in {i.id for i in again} and held[1] not in {i.id for i in again}
    # finished items cannot be held; deleting an item forgets its hold
    await store.update_queue_item(items[3].id, QueueState.DELIVERED, now, "250 ok")
    assert await store.hold_queue_items([items[3].id]) == 0
    await store.delete_queue_item(held[1])
    assert await store.held_queue_ids() == set()


async def test_counts(store: MailStore) -> None:  # noqa: F811
    base_accounts, base_domains = await store.count_accounts(), await store.count_domains()
    assert await store.queue_summary() == ({}, None)
    await store.add_domain("example.org")
    for n in range(5):
        await store.add_account(f"u{n}@example.test", "h", None)
    assert await store.count_accounts() == base_accounts + 5
    assert await store.count_domains() == base_domains + 1
    for n in range(3):
        await store.accept(b"Subject: q\r\n\r\nq\r\n", ENV, [],
                           [RemoteRecipient(f"r{n}@remote.test")])
    items = sorted(await store.list_queue(), key=lambda i: i.id)
    await store.update_queue_item(items[0].id, QueueState.DEFERRED, time.time(), "451")
    counts, oldest = await store.queue_summary()
    assert counts == {"pending": 2, "deferred": 1}
    assert oldest == min(i.created for i in items)
