"""Two nodes on one PostgreSQL queue: every recipient is delivered once, and a stopped
node's claimed recipients are delivered by another node once their lease has run out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pochta.storage.postgres import PostgresStore
from tests.pgcluster import PgCluster

from .conftest import FakeClock
from .sink import Sink
from .test_worker import enqueue, make_worker, resolver_for

LEASE = 60.0


@pytest.fixture
async def nodes(pg_cluster: PgCluster) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    dsn = pg_cluster.fresh_dsn()
    a = await PostgresStore.open(dsn, queue_lease=LEASE, node_name="node-a")
    b = await PostgresStore.open(dsn, queue_lease=LEASE, node_name="node-b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_workers_deliver_each_recipient_once(
    nodes: tuple[PostgresStore, PostgresStore], clock: FakeClock, sink: Sink
) -> None:
    a, b = nodes
    rcpts = [f"user{n}@example.net" for n in range(30)]
    for n in range(0, 30, 3):
        await enqueue(a, *rcpts[n:n + 3])
    resolver = resolver_for("example.net")
    await asyncio.gather(make_worker(a, clock, resolver, sink.port).run_once(),
                         make_worker(b, clock, resolver, sink.port).run_once())
    assert sorted(sink.recipients()) == sorted(rcpts)


async def test_a_stopped_nodes_recipients_are_taken_over_after_the_lease(
    nodes: tuple[PostgresStore, PostgresStore], clock: FakeClock, sink: Sink
) -> None:
    a, b = nodes
    await enqueue(a, "x@example.net", "y@example.net")
    claimed = await a.due_queue_items(clock())  # node a claims, then dies before sending
    assert len(claimed) == 2
    await a.close()
    worker = make_worker(b, clock, resolver_for("example.net"), sink.port)
    assert await worker.run_once() == 0
    clock.advance(LEASE + 1)
    assert await worker.run_once() == 2
    assert sorted(sink.recipients()) == ["x@example.net", "y@example.net"]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.close()
