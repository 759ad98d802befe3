"""Queue claims with leases (storage contract): two workers never get the same item, a
dead worker's items come back after its lease, and a retry is not an attempt. Runs on
every backend of the conformance suite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pochta.dns import StaticResolver
from pochta.queue.settings import QueueConfig, Route
from pochta.queue.worker import QueueWorker
from pochta.storage.interfaces import Envelope, MailStore, QueueState, RemoteRecipient
from tests.queue.sink import Sink
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401

ENV = Envelope(sender="a@example.test")


async def test_claims_are_exclusive_and_leases_expire(store: MailStore) -> None:  # noqa: F811
    for n in range(10):
        await store.accept(b"Subject: q\r\n\r\nq\r\n", ENV, [],
                           [RemoteRecipient(f"r{n}@remote.test")])
    now = time.time()
    a = await store.claim_queue_items(now, 6, "node-a:1:x", 60)
    b = await store.claim_queue_items(now, 6, "node-b:2:y", 60)
    assert len(a) == 6 and len(b) == 4
    assert not {i.id for i in a} & {i.id for i in b}
    assert await store.claim_queue_items(now, 10, "node-c:3:z", 60) == []
    # a's outcome ends its claim on that item; b's lease runs out; a renews the rest
    await store.update_queue_item(a[0].id, QueueState.DEFERRED, now, "451 later")
    assert await store.renew_queue_claims([i.id for i in a[1:]], "node-a:1:x",
                                          now + 600) == 5
    later = await store.claim_queue_items(now + 61, 10, "node-c:3:z", 60)
    assert {i.id for i in later} == {a[0].id} | {i.id for i in b}
    assert sorted(await store.queue_claim_owners()) == ["node-a:1:x", "node-c:3:z"]
    assert await store.release_queue_claims_of("node-a:1:x") == 5
    again = await store.claim_queue_items(now + 61, 10, "node-d:4:w", 60)
    assert {i.id for i in again} == {i.id for i in a[1:]}
    # release without an attempt; reschedule without an attempt
    await store.release_queue_items([again[0].id], "node-d:4:w")
    assert await store.reschedule_queue_items([again[0].id], now + 3600) == 1
    item = next(i for i in await store.list_queue() if i.id == again[0].id)
    assert item.attempts == 0 and item.next_attempt == now + 3600


async def test_two_workers_deliver_every_recipient_exactly_once(
    factory: Factory, tmp_path: Path,  # noqa: F811
) -> None:
    """Two workers on two store instances of one store (two processes or nodes in
    production) drain 300 recipients: the peer records each exactly once."""
    sink = Sink()
    await sink.start()
    first = await factory(tmp_path)
    second = await factory(tmp_path)
    try:
        for n in range(300):
            await first.accept(b"Subject: q\r\n\r\nq\r\n", ENV, [],
                               [RemoteRecipient(f"u{n}@remote.test")])
        routes = [Route("remote.test", "127.0.0.1", sink.port, tls="none")]
        config = QueueConfig(poll_interval=0.2, per_destination=4)
        workers = [QueueWorker(s, "mta.example.test", StaticResolver(), config, routes)
                   for s in (first, second)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        for _ in range(400):
            if len(sink.recipients()) >= 300:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        for w in workers:
            await w.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        got = sink.recipients()
        assert sorted(got) == sorted(f"u{n}@remote.test" for n in range(300))
        assert {i.state for i in await first.list_queue()} == {QueueState.DELIVERED}
    finally:
        await first.close()
        await second.close()
        await sink.close()


async def test_locks_are_exclusive_and_expire(store: MailStore) -> None:  # noqa: F811
    """The POP3 maildrop lock across processes and nodes."""
    assert await store.try_lock("pop3:1", "node-a", 30)
    assert not await store.try_lock("pop3:1", "node-b", 30)
    assert await store.try_lock("pop3:1", "node-a", 30)  # renewal by the holder
    await store.unlock("pop3:1", "node-b")  # not the holder: nothing happens
    assert not await store.try_lock("pop3:1", "node-b", 30)
    await store.unlock("pop3:1", "node-a")
    assert await store.try_lock("pop3:1", "node-b", 0.2)
    await asyncio.sleep(0.3)  # node-b died: its lock expires
    assert await store.try_lock("pop3:1", "node-a", 30)


async def test_counters_count_within_their_window(store: MailStore) -> None:  # noqa: F811
    """Login failures and sending rates, shared by every node."""
    assert await store.add_to_counter("fail:1.2.3.4", 1, 60) == 1
    assert await store.add_to_counter("fail:1.2.3.4", 2, 60) == 3
    assert await store.counter_value("fail:1.2.3.4", 60) == 3
    assert await store.counter_value("fail:other", 60) == 0
    assert await store.add_to_counter("short", 5, 1) == 5
    await asyncio.sleep(2.1)
    assert await store.counter_value("short", 1) == 0
    assert await store.add_to_counter("short", 1, 1) == 1
    await store.reset_counter("fail:1.2.3.4")
    assert await store.counter_value("fail:1.2.3.4", 60) == 0


async def test_claims_take_higher_priorities_first(store: MailStore) -> None:  # noqa: F811
    """Streams (issue 18): a transactional item queued after a bulk backlog is claimed
    first; stream and priority survive the round trip through the store."""
    bulk = Envelope(sender="b@example.test", stream="bulk", priority=-10)
    urgent = Envelope(sender="t@example.test", stream="transactional", priority=10)
    for n in range(20):
        await store.accept(b"Subject: b\r\n\r\nb\r\n", bulk, [],
                           [RemoteRecipient(f"b{n}@remote.test")])
    await store.accept(b"Subject: p\r\n\r\np\r\n", ENV, [], [RemoteRecipient("p@remote.test")])
    await store.accept(b"Subject: t\r\n\r\nt\r\n", urgent, [],
                       [RemoteRecipient("t@remote.test")])
    now = time.time() + 1
    first = await store.claim_queue_items(now, 2, "node-a:1:x", 60)
    assert [i.recipient.address for i in first] == ["t@remote.test", "p@remote.test"]
    assert first[0].envelope.stream == "transactional" and first[0].envelope.priority == 10
    assert first[1].envelope.stream == "" and first[1].envelope.priority == 0
    rest = await store.claim_queue_items(now, 100, "node-a:1:x", 60)
    assert len(rest) == 20
    assert {(i.envelope.stream, i.envelope.priority) for i in rest} == {("bulk", -10)}
    # oldest first within a priority
    assert [i.recipient.address for i in rest[:3]] == ["b0@remote.test", "b1@remote.test",
                                                       "b2@remote.test"]
