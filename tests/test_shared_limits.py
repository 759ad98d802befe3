"""Limits that must hold across processes and nodes (storage v2 issue, item 4): with
``shared`` set (``--workers N``, PostgreSQL) the brute-force counts and the hourly
submission limits live in the store, so spreading over workers does not multiply them.
Each "worker" here is its own Authenticator / counter with its own store instance."""

from __future__ import annotations

from pathlib import Path

from pochta.services.auth import Authenticator
from pochta.services.ratelimit import HourlyCounter
from pochta.storage.sqlite import SQLiteStore
from tests.test_auth_service import ALICE, CONFIG, CountingHasher, FakeClock, store  # noqa: F401


async def test_failures_in_one_worker_lock_out_in_another(
    store: SQLiteStore, tmp_path: Path  # noqa: F811
) -> None:
    other_store = await SQLiteStore.open(tmp_path / "data")
    try:
        workers = [
            Authenticator(s, CONFIG, FakeClock(), sleep=FakeClock().sleep,
                          hasher=CountingHasher(), secret=b"k" * 32, shared=True)
            for s in (store, other_store)
        ]
        ip = "203.0.113.7"
        for n in range(10):  # five wrong guesses on each worker
            assert await workers[n % 2].check_password(ALICE, f"guess{n}", ip) is None
        for worker in workers:
            assert not await worker.allowed(ip, ALICE)
            assert await worker.check_password(ALICE, "alice-pw", ip) is None
        # without shared counters each worker alone would still let this address guess
        alone = Authenticator(other_store, CONFIG, FakeClock(), sleep=FakeClock().sleep,
                              hasher=CountingHasher(), secret=b"k" * 32)
        assert await alone.allowed(ip, ALICE)
    finally:
        await other_store.close()


async def test_hourly_limits_add_up_across_workers(
    store: SQLiteStore, tmp_path: Path  # noqa: F811
) -> None:
    other_store = await SQLiteStore.open(tmp_path / "data")
    try:
        a, b = HourlyCounter("msg", store), HourlyCounter("msg", other_store)
        for _ in range(3):
            await a.add("alice@example.org")
            await b.add("alice@example.org")
        assert await a.used("alice@example.org") == 6
        assert await b.would_exceed("alice@example.org", 1, 6)
        assert not await b.would_exceed("bob@example.org", 1, 6)
        local = HourlyCounter("msg")  # one process: in memory, no store round trip
        await local.add("alice@example.org")
        assert await local.used("alice@example.org") == 1
    finally:
        await other_store.close()
