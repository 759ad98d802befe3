"""accept() throughput of each storage backend, without SMTP: N concurrent 4 KB messages
into one mailbox (every delivery waits for the mailbox's UIDNEXT) and spread over twenty.

    .venv/bin/python bench/store_accept.py

SQLite runs in a temporary directory; PostgreSQL in the tests' throwaway cluster
(tests/pgcluster.py: Debian's postgresql, fsync on, as the postgres user when root).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"),
                str(Path(__file__).resolve().parents[1])]

from pochta.storage.interfaces import Envelope, LocalTarget, MailStore  # noqa: E402
from pochta.storage.postgres import PostgresStore  # noqa: E402
from pochta.storage.sqlite import SQLiteStore  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402

MSG = b"Subject: bench\r\n\r\n" + b"x" * 4000 + b"\r\n"
CONCURRENCY = 50


async def bench(store: MailStore, label: str) -> None:
    await store.add_domain("example.test")
    accounts = [(await store.add_account(f"u{i}@example.test", "h", None)).id
                for i in range(20)]
    for boxes, total in ((1, 400), (20, 1000)):
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int, boxes: int = boxes, sem: asyncio.Semaphore = sem) -> None:
            async with sem:
                await store.accept(MSG, Envelope("a@b.test"),
                                   [LocalTarget(accounts[i % boxes])])

        start = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(total)])
        rate = total / (time.perf_counter() - start)
        print(f"{label:10} {total:5} accepts into {boxes:2} mailbox(es), "
              f"concurrency {CONCURRENCY}: {rate:7.0f}/s")
    await store.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        await bench(await SQLiteStore.open(Path(d)), "sqlite")
    cluster = PgCluster.start()
    try:
        await bench(await PostgresStore.open(cluster.fresh_dsn(), pool_size=10), "postgresql")
    finally:
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
